package nip

import (
	"encoding/hex"
	"fmt"

	"github.com/nbd-wtf/go-nostr"
)

// KindRelease is a maintainer's signature of a release's PCRs.
const KindRelease = 63794

// ReleasePCRs are the PCRs a release signature covers: the enclave image.
var ReleasePCRs = []uint{0, 1, 2}

// ReleaseSignature builds the unsigned kind-63794 release signature: t
// (prod or dev), r repo, v version, x <hex> PCRn for PCR0/1/2.
func ReleaseSignature(repo, version, mode string, pcrs map[uint][]byte, now nostr.Timestamp) (nostr.Event, error) {
	tags := nostr.Tags{{"t", mode}, {"r", repo}, {"v", version}, {"alt", "enclaved release signature"}}
	for _, i := range ReleasePCRs {
		p := pcrs[i]
		if len(p) != 48 {
			return nostr.Event{}, fmt.Errorf("release: PCR%d must be 48 bytes (96 hex characters)", i)
		}
		tags = append(tags, nostr.Tag{"x", hex.EncodeToString(p), fmt.Sprintf("PCR%d", i)})
	}
	return nostr.Event{Kind: KindRelease, CreatedAt: now, Content: "", Tags: tags}, nil
}

// SignsPCR says whether e signs value as PCR i: with an "x <hex> PCRi" tag
// (releases) or a "PCRi <hex>" tag (build and instance signatures, and
// older releases).
func SignsPCR(e *nostr.Event, i uint, value []byte) bool {
	want, label := hex.EncodeToString(value), fmt.Sprintf("PCR%d", i)
	for _, t := range e.Tags {
		if (len(t) >= 3 && t[0] == "x" && t[1] == want && t[2] == label) || (len(t) >= 2 && t[0] == label && t[1] == want) {
			return true
		}
	}
	return false
}
