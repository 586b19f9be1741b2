package nip

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/nbd-wtf/go-nostr"
)

// Build and instance signatures, embedded in announcements (never
// published on their own: they carry the "-" tag). A build signature binds
// the builder's key to PCR8, the digest of the certificate the enclave
// image was signed with; an instance signature binds the launcher's key to
// PCR4, the digest of the EC2 instance id the enclave runs on.
const (
	KindBuildSignature    = 23794
	KindInstanceSignature = 23795
	// Earlier kinds, still on relays and accepted by verifiers.
	KindBuildSignatureLegacy    = 63795
	KindInstanceSignatureLegacy = 63796
	KindReleaseLegacy           = 63792
)

// BuildSignature builds the unsigned build signature: r repo, v version,
// t mode, cert (the signing certificate, PEM) and PCR8 (its digest).
func BuildSignature(repo, version, mode, certPEM string, pcr8 []byte, now nostr.Timestamp) nostr.Event {
	return nostr.Event{Kind: KindBuildSignature, CreatedAt: now, Tags: nostr.Tags{
		{"-"}, {"r", repo}, {"v", version}, {"t", mode}, {"cert", certPEM},
		{"PCR8", hex.EncodeToString(pcr8)}, {"alt", "enclaved build signature"},
	}}
}

// InstanceSignature builds the unsigned instance signature: t mode and
// PCR4, the digest of the EC2 instance id (attest.PCRDigest of the id).
func InstanceSignature(pcr4 []byte, mode string, now nostr.Timestamp) nostr.Event {
	return nostr.Event{Kind: KindInstanceSignature, CreatedAt: now, Tags: nostr.Tags{
		{"-"}, {"t", mode}, {"PCR4", hex.EncodeToString(pcr4)},
		{"alt", "enclaved instance signature"},
	}}
}

// ParseSigned parses a JSON event of one of kinds and checks its id and
// signature. Who signed it is the caller's to check.
func ParseSigned(raw []byte, kinds ...int) (*nostr.Event, error) {
	var e nostr.Event
	if err := json.Unmarshal(raw, &e); err != nil {
		return nil, errors.New("not a JSON event")
	}
	if !slices.Contains(kinds, e.Kind) {
		if len(kinds) == 1 {
			return nil, fmt.Errorf("kind %d, want %d", e.Kind, kinds[0])
		}
		return nil, fmt.Errorf("kind %d, want one of %v", e.Kind, kinds)
	}
	if ok, _ := e.CheckSignature(); !ok || e.GetID() != e.ID {
		return nil, errors.New("bad signature")
	}
	return &e, nil
}
