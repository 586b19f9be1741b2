package nip

import (
	"encoding/base64"
	"strconv"
	"time"

	"github.com/nbd-wtf/go-nostr"
)

// Kinds of the enclaved event formats (DESIGN.md).
const (
	KindContainerCert   = 23797 // certificate from a key to a container's key, embedded only
	KindContainerStatus = 63797 // a container's status, signed by its own key
)

// ContainerCert builds the unsigned kind-23797 certificate by which the
// instance key vouches for a container's key: p <container> container,
// expiration, r docker://<image>. It is embedded (as JSON) in the
// container's status events, never published alone.
func ContainerCert(container, image string, expires time.Time, now nostr.Timestamp) nostr.Event {
	return nostr.Event{Kind: KindContainerCert, CreatedAt: now, Content: "", Tags: nostr.Tags{
		{"p", container, "container"},
		{"expiration", strconv.FormatInt(expires.Unix(), 10)},
		{"r", "docker://" + image},
		{"alt", "enclaved container certificate"},
	}}
}

// ContainerStatus builds the unsigned kind-63797 status of a container: p
// <instance> enclaved, alt, tee_root (the instance's kind-23793 attestation event
// as JSON, when the instance has one), tee_cert (the signed kind-23797
// certificate as JSON), state, balance in sats, r <image> docker.
func ContainerStatus(instance, teeRoot, teeCert, state string, balanceSats int64, image string, now nostr.Timestamp) nostr.Event {
	tags := nostr.Tags{{"p", instance, "enclaved"}, {"alt", "enclaved container"}}
	if teeRoot != "" {
		tags = append(tags, nostr.Tag{"tee_root", teeRoot})
	}
	tags = append(tags,
		nostr.Tag{"tee_cert", teeCert},
		nostr.Tag{"state", state},
		nostr.Tag{"balance", strconv.FormatInt(balanceSats, 10)},
		nostr.Tag{"r", image, "docker"},
	)
	return nostr.Event{Kind: KindContainerStatus, CreatedAt: now, Content: "", Tags: tags}
}

// KindTEERoot is the instance's attestation event, embedded only.
const KindTEERoot = 23793

// TEERoot builds the unsigned kind-23793 attestation event: content is the
// base64 attestation document (whose public_key is the instance pubkey);
// tags ["-"], t (nitro mode: prod or debug; dev), expiration (when the
// document's signing certificate expires), alt.
func TEERoot(doc []byte, mode string, expires time.Time, now nostr.Timestamp) nostr.Event {
	return nostr.Event{Kind: KindTEERoot, CreatedAt: now, Content: base64.StdEncoding.EncodeToString(doc), Tags: nostr.Tags{
		{"-"},
		{"t", mode},
		{"expiration", strconv.FormatInt(expires.Unix(), 10)},
		{"alt", "attestation certificate by AWS Nitro Enclave"},
	}}
}
