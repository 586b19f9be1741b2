package keystore

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/nip"
)

// Policy says which other builds may have a secret. Ref names the
// software (its repository URL); ReleasePubkeys are the maintainers whose
// release signatures (kind 63794, or keycrux's 63792) of a build's
// PCR0/1/2 with r = Ref let that build have the secret; Threshold of them
// must have signed (0: all, as in keycrux).
type Policy struct {
	Ref            string   `json:"ref"`
	ReleasePubkeys []string `json:"release_pubkeys,omitempty"`
	Threshold      int      `json:"threshold,omitempty"`
}

// notFoundError is a get with no releasable secret, with the reasons
// other builds' secrets were withheld.
type notFoundError struct{ reasons []string }

func (e *notFoundError) Error() string {
	if len(e.reasons) == 0 {
		return ErrNotFound
	}
	return ErrNotFound + ": " + strings.Join(e.reasons, "; ")
}

func (p *Policy) valid() error {
	if p.Ref == "" {
		return errors.New("policy.ref is required")
	}
	if len(p.ReleasePubkeys) > MaxSigs || p.Threshold < 0 || p.Threshold > len(p.ReleasePubkeys) {
		return fmt.Errorf("policy: %d release pubkeys (at most %d), threshold %d", len(p.ReleasePubkeys), MaxSigs, p.Threshold)
	}
	for _, k := range p.ReleasePubkeys {
		if !nostr.IsValid32ByteHex(k) {
			return fmt.Errorf("policy.release_pubkeys: %q is not a hex pubkey", k)
		}
	}
	return nil
}

// allows says whether a build with PCR0/1/2 pcrs, offering in, satisfies
// the policy.
func (p *Policy) allows(pcrs [3]string, in Input) error {
	if p.Ref != in.Ref {
		return fmt.Errorf("input.ref %q is not the policy's ref", in.Ref)
	}
	if len(p.ReleasePubkeys) == 0 {
		return nil
	}
	if len(in.ReleaseSignatures) > MaxSigs {
		return fmt.Errorf("more than %d release signatures", MaxSigs)
	}
	need := p.Threshold
	if need == 0 {
		need = len(p.ReleasePubkeys)
	}
	signed := 0
	for _, m := range p.ReleasePubkeys {
		if slices.ContainsFunc(in.ReleaseSignatures, func(e nostr.Event) bool { return signsRelease(e, m, p.Ref, pcrs) }) {
			signed++
		}
	}
	if signed < need {
		return fmt.Errorf("%d of the policy's %d maintainers signed this build's PCR0/1/2, %d needed", signed, len(p.ReleasePubkeys), need)
	}
	return nil
}

// signsRelease says whether e is maintainer's valid release signature of
// ref with PCR0/1/2 pcrs.
func signsRelease(e nostr.Event, maintainer, ref string, pcrs [3]string) bool {
	if e.PubKey != maintainer || (e.Kind != nip.KindRelease && e.Kind != nip.KindReleaseLegacy) || nip.TagValue(&e, "r") != ref {
		return false
	}
	for i, want := range pcrs {
		label := "PCR" + strconv.Itoa(i)
		if !slices.ContainsFunc(e.Tags, func(t nostr.Tag) bool { return len(t) >= 3 && t[0] == "x" && t[1] == want && t[2] == label }) {
			return false
		}
	}
	ok, _ := e.CheckSignature()
	return ok && e.GetID() == e.ID
}
