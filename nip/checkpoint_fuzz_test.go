package nip

import (
	"encoding/hex"
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/nbd-wtf/go-nostr"
)

// FuzzParseCheckpoint signs checkpoints with fuzzed tag values (and, for
// some, alters them after signing): what ParseCheckpoint accepts is
// well-formed, of the checkpoint kind, signed by its instance, and
// rebuilds into an event that parses to the same checkpoint; an event
// altered after signing is refused.
func FuzzParseCheckpoint(f *testing.F) {
	sk := nostr.GeneratePrivateKey()
	pk, _ := nostr.GetPublicKey(sk)
	sum := strings.Repeat("ab", 32)
	f.Add(uint8(0), "7", sum, "1234", "state-a")
	f.Add(uint8(1), "1", strings.ToUpper(sum), "1", "state-b")
	f.Add(uint8(2), "-1", "00", "0", "")
	f.Add(uint8(3), "18446744073709551615", sum, "9223372036854775807", strings.Repeat("b", 128))
	f.Add(uint8(0), "05", sum+"00", "+3", "x")
	f.Fuzz(func(t *testing.T, variant uint8, seq, x, size, blob string) {
		evt := nostr.Event{Kind: KindCheckpoint, CreatedAt: 1700000000, Tags: nostr.Tags{
			{"seq", seq}, {"x", x}, {"size", size}, {"blob", blob}, {"t", "dev"},
		}}
		switch variant % 4 {
		case 1: // the tags twice, the second set different
			evt.Tags = append(evt.Tags, nostr.Tag{"seq", "1"}, nostr.Tag{"x", sum}, nostr.Tag{"size", "1"}, nostr.Tag{"blob", "state-a"})
		case 2: // another kind
			evt.Kind = KindCheckpoint + 1 + int(variant)
		}
		if err := evt.Sign(sk); err != nil {
			t.Fatal(err)
		}
		if variant%4 == 3 { // altered after signing
			evt.Tags = append(evt.Tags, nostr.Tag{"seq", "2"})
			if _, err := ParseCheckpoint(&evt); err == nil {
				t.Fatal("a checkpoint altered after signing was accepted")
			}
			return
		}
		cp, err := ParseCheckpoint(&evt)
		if err != nil {
			return
		}
		if evt.Kind != KindCheckpoint {
			t.Fatalf("a kind-%d event was accepted as a checkpoint", evt.Kind)
		}
		if cp.Instance != pk {
			t.Fatalf("checkpoint of %s, signed by %s", cp.Instance, pk)
		}
		checkCheckpoint(t, cp, pk, sk)
	})
}

// FuzzCheckpointJSON feeds JSON, as the key store and the relays return
// checkpoints, to ParseCheckpoint: what it accepts is well-formed and its
// signer's.
func FuzzCheckpointJSON(f *testing.F) {
	sk := nostr.GeneratePrivateKey()
	pk, _ := nostr.GetPublicKey(sk)
	good := CheckpointEvent(Checkpoint{Seq: 7, SHA256: strings.Repeat("ab", 32), Size: 1234, Blob: "state-a"}, "dev", 1700000000)
	good.Sign(sk)
	raw, _ := json.Marshal(good)
	f.Add(string(raw))
	f.Add(strings.Replace(string(raw), `"kind"`, `"kind":1,"kind"`, 1))
	f.Add(`{"kind":13795,"tags":[["seq","1"]]}`)
	f.Add(`{"kind":13795,"tags":[[]],"content":"\ud800"}`)
	f.Fuzz(func(t *testing.T, raw string) {
		var e nostr.Event
		if json.Unmarshal([]byte(raw), &e) != nil {
			return
		}
		if cp, err := ParseCheckpoint(&e); err == nil {
			checkCheckpoint(t, cp, pk, sk)
		}
	})
}

// checkCheckpoint: a parsed checkpoint is in range, is its signer's, and
// (when pk, whose secret key is sk, signed it) survives being built and
// signed again.
func checkCheckpoint(t *testing.T, cp Checkpoint, pk, sk string) {
	t.Helper()
	if cp.Seq == 0 || cp.Size <= 0 || cp.Blob == "" || len(cp.Blob) > 128 || cp.Event == nil || cp.Instance != cp.Event.PubKey {
		t.Fatalf("accepted %+v", cp)
	}
	if b, err := hex.DecodeString(cp.SHA256); err != nil || len(b) != 32 {
		t.Fatalf("accepted x %q", cp.SHA256)
	}
	if cp.Instance != pk {
		return
	}
	again := CheckpointEvent(cp, "dev", cp.Event.CreatedAt)
	if err := again.Sign(sk); err != nil {
		t.Fatal(err)
	}
	cp2, err := ParseCheckpoint(&again)
	if err != nil {
		t.Fatalf("a rebuilt checkpoint is refused: %v", err)
	}
	if cp2.Seq != cp.Seq || cp2.SHA256 != cp.SHA256 || cp2.Size != cp.Size || cp2.Blob != cp.Blob || cp2.Instance != cp.Instance {
		t.Fatalf("rebuilt %+v, was %+v", cp2, cp)
	}
	if strconv.FormatUint(cp2.Seq, 10) != TagValue(&again, "seq") {
		t.Fatalf("seq tag %q for %d", TagValue(&again, "seq"), cp2.Seq)
	}
}

// FuzzParseSigned feeds raw JSON, as the parent's metadata and the
// relays carry embedded build, instance and release signatures, to
// ParseSigned: what it accepts has one of the kinds asked for and a valid
// id and signature, and encodes back into JSON that parses to the same
// event.
func FuzzParseSigned(f *testing.F) {
	sk := nostr.GeneratePrivateKey()
	for _, e := range []nostr.Event{
		BuildSignature("github.com/enclaved/enclaved", "v1.0.0", "prod", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", make([]byte, 48), 1700000000),
		InstanceSignature(make([]byte, 48), "prod", 1700000000),
		{Kind: KindRelease, CreatedAt: 1700000000, Content: "é\u2028\"\\", Tags: nostr.Tags{{"r", "x"}, {"v", "1"}}},
	} {
		e.Sign(sk)
		raw, _ := json.Marshal(e)
		f.Add(string(raw), uint8(0))
		f.Add(strings.Replace(string(raw), `"kind"`, `"kind":1,"kind"`, 1), uint8(1))
	}
	f.Add(`{"kind":23794,"tags":[["cert","MIIB"],["PCR8","00"]]}`, uint8(0))
	f.Add(`{"kind":23795,"tags":[[]],"content":"\ud800"}`, uint8(2))
	kindSets := [][]int{
		{KindBuildSignature, KindBuildSignatureLegacy},
		{KindInstanceSignature, KindInstanceSignatureLegacy},
		{KindRelease, KindReleaseLegacy},
	}
	f.Fuzz(func(t *testing.T, raw string, which uint8) {
		kinds := kindSets[int(which)%len(kindSets)]
		e, err := ParseSigned([]byte(raw), kinds...)
		if err != nil {
			if e != nil {
				t.Fatal("an event with an error")
			}
			return
		}
		if e.Kind != kinds[0] && e.Kind != kinds[1] {
			t.Fatalf("kind %d accepted for %v", e.Kind, kinds)
		}
		if ok, _ := e.CheckSignature(); !ok || e.GetID() != e.ID {
			t.Fatal("accepted a bad signature")
		}
		again, _ := json.Marshal(e)
		e2, err := ParseSigned(again, kinds...)
		if err != nil {
			t.Fatalf("an accepted event re-encoded as %s is refused: %v", again, err)
		}
		if e2.ID != e.ID || e2.Content != e.Content || e2.Sig != e.Sig || len(e2.Tags) != len(e.Tags) {
			t.Fatalf("re-encoded %+v, was %+v", e2, e)
		}
	})
}
