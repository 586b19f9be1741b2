package nip

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"
)

const testLNURL = "lnurl1dp68gurn8ghj7um5v93kketj9ehx2amn9uh8wetvdskkkmn0wahz7mrww4excup0dajx2mrv92x9xp"

// zapRequest returns a signed zap request to recipient, changed by edit
// before signing.
func zapRequest(t testing.TB, sk, recipient string, edit func(*nostr.Event)) string {
	t.Helper()
	evt := nostr.Event{Kind: nostr.KindZapRequest, CreatedAt: nostr.Now(), Content: "keep it running",
		Tags: nostr.Tags{
			{"relays", "wss://relay.example.com", "ws://127.0.0.1:7447"},
			{"amount", "21000"},
			{"lnurl", testLNURL},
			{"p", recipient},
		}}
	if edit != nil {
		edit(&evt)
	}
	if err := evt.Sign(sk); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(evt)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestZapRequestValid(t *testing.T) {
	sk, recipient := nostr.GeneratePrivateKey(), nostr.GeneratePrivateKey()
	rpk, _ := nostr.GetPublicKey(recipient)
	spk, _ := nostr.GetPublicKey(sk)
	eid := strings.Repeat("ab", 32)
	raw := zapRequest(t, sk, rpk, func(e *nostr.Event) {
		e.Tags = append(e.Tags, nostr.Tag{"e", eid}, nostr.Tag{"P", spk}, nostr.Tag{"k", "1"})
	})
	z, err := ParseZapRequest(raw, 21000, rpk, strings.ToUpper(testLNURL))
	if err != nil {
		t.Fatal(err)
	}
	if z.Sender != spk || z.Recipient != rpk || z.EventID != eid || z.AmountMsat != 21000 || len(z.Relays) != 2 || z.Raw != raw {
		t.Errorf("parsed %+v", z)
	}
	paid := time.Unix(1_795_000_000, 0)
	r := ZapReceipt(z, "lnbcrt210n1...", strings.Repeat("cd", 32), paid)
	if r.Kind != 9735 || r.CreatedAt != nostr.Timestamp(paid.Unix()) || r.Content != "" ||
		r.Tags.FindWithValue("p", rpk) == nil || r.Tags.FindWithValue("P", spk) == nil || r.Tags.FindWithValue("e", eid) == nil ||
		r.Tags.FindWithValue("description", raw) == nil || r.Tags.Find("bolt11") == nil || r.Tags.Find("preimage") == nil {
		t.Errorf("receipt %+v", r)
	}
	if again := ZapReceipt(z, "lnbcrt210n1...", strings.Repeat("cd", 32), paid); again.GetID() != r.GetID() {
		t.Error("the receipt is not deterministic")
	}
	// Without an amount tag any amount is accepted.
	raw = zapRequest(t, sk, rpk, func(e *nostr.Event) { e.Tags = dropTag(e.Tags, "amount") })
	if _, err := ParseZapRequest(raw, 5000, rpk, testLNURL); err != nil {
		t.Errorf("no amount tag: %v", err)
	}
}

func dropTag(tags nostr.Tags, name string) nostr.Tags {
	var out nostr.Tags
	for _, t := range tags {
		if t[0] != name {
			out = append(out, t)
		}
	}
	return out
}

// Each rule of NIP-57 Appendix D, broken once, gives its own error.
func TestZapRequestRules(t *testing.T) {
	sk, recipient, other := nostr.GeneratePrivateKey(), nostr.GeneratePrivateKey(), nostr.GeneratePrivateKey()
	rpk, _ := nostr.GetPublicKey(recipient)
	opk, _ := nostr.GetPublicKey(other)
	eid := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		name string
		raw  func() string
		want string
	}{
		{"not JSON", func() string { return "{kind:9734" }, "not a JSON event"},
		{"too long", func() string { return strings.Repeat(" ", MaxZapRequest+1) }, "too long"},
		{"wrong kind", func() string { return zapRequest(t, sk, rpk, func(e *nostr.Event) { e.Kind = 1 }) }, "kind 1, want 9734"},
		{"bad signature", func() string {
			raw := zapRequest(t, sk, rpk, nil)
			var e nostr.Event
			json.Unmarshal([]byte(raw), &e)
			e.Sig = strings.Repeat("0", 128)
			b, _ := json.Marshal(e)
			return string(b)
		}, "invalid signature"},
		{"tampered", func() string {
			return strings.Replace(zapRequest(t, sk, rpk, nil), "keep it running", "keep it stopped", 1)
		}, "id does not match"},
		{"no tags", func() string { return zapRequest(t, sk, rpk, func(e *nostr.Event) { e.Tags = nostr.Tags{} }) }, "no tags"},
		{"no p tag", func() string { return zapRequest(t, sk, rpk, func(e *nostr.Event) { e.Tags = dropTag(e.Tags, "p") }) }, "0 p tags"},
		{"two p tags", func() string {
			return zapRequest(t, sk, rpk, func(e *nostr.Event) { e.Tags = append(e.Tags, nostr.Tag{"p", opk}) })
		}, "2 p tags"},
		{"p tag of another", func() string { return zapRequest(t, sk, opk, nil) }, "p tag is not this recipient"},
		{"two e tags", func() string {
			return zapRequest(t, sk, rpk, func(e *nostr.Event) { e.Tags = append(e.Tags, nostr.Tag{"e", eid}, nostr.Tag{"e", eid}) })
		}, "2 e tags"},
		{"bad e tag", func() string {
			return zapRequest(t, sk, rpk, func(e *nostr.Event) { e.Tags = append(e.Tags, nostr.Tag{"e", "xyz"}) })
		}, "e tag is not an event id"},
		{"no relays tag", func() string {
			return zapRequest(t, sk, rpk, func(e *nostr.Event) { e.Tags = dropTag(e.Tags, "relays") })
		}, "no relays tag"},
		{"no usable relay", func() string {
			return zapRequest(t, sk, rpk, func(e *nostr.Event) {
				e.Tags = append(dropTag(e.Tags, "relays"), nostr.Tag{"relays", "https://not-a-relay.example"})
			})
		}, "no ws:// or wss:// relay"},
		{"amount differs", func() string { return zapRequest(t, sk, rpk, nil) }, "amount tag 21000 does not equal the amount parameter 20000"},
		{"amount not a number", func() string {
			return zapRequest(t, sk, rpk, func(e *nostr.Event) { e.Tags = append(dropTag(e.Tags, "amount"), nostr.Tag{"amount", "lots"}) })
		}, "not a positive number"},
		{"bad a tag", func() string {
			return zapRequest(t, sk, rpk, func(e *nostr.Event) { e.Tags = append(e.Tags, nostr.Tag{"a", "30023:nothex:x"}) })
		}, "a tag is not an event coordinate"},
		{"lnurl of another", func() string {
			return zapRequest(t, sk, rpk, func(e *nostr.Event) { e.Tags = append(dropTag(e.Tags, "lnurl"), nostr.Tag{"lnurl", "lnurl1other"}) })
		}, "lnurl tag is not this recipient's lnurl"},
		{"P of another", func() string {
			return zapRequest(t, sk, rpk, func(e *nostr.Event) { e.Tags = append(e.Tags, nostr.Tag{"P", opk}) })
		}, "P tag is not the sender's pubkey"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			amount := int64(21000)
			if tc.name == "amount differs" {
				amount = 20000
			}
			_, err := ParseZapRequest(tc.raw(), amount, rpk, testLNURL)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			if _, ok := err.(*ZapError); !ok {
				t.Errorf("%T is not a *ZapError", err)
			}
		})
	}
}

func FuzzZapRequest(f *testing.F) {
	sk, recipient := nostr.GeneratePrivateKey(), nostr.GeneratePrivateKey()
	rpk, _ := nostr.GetPublicKey(recipient)
	f.Add(zapRequest(f, sk, rpk, nil), int64(21000))
	f.Add(`{"kind":9734,"tags":[["p"]],"content":""}`, int64(1))
	f.Add(`[]`, int64(-1))
	f.Fuzz(func(t *testing.T, raw string, amount int64) {
		z, err := ParseZapRequest(raw, amount, rpk, testLNURL)
		if err != nil {
			if _, ok := err.(*ZapError); !ok {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		if z.Recipient != rpk || len(z.Relays) == 0 || len(z.Relays) > MaxReceiptRelays || (z.AmountMsat != 0 && z.AmountMsat != amount) {
			t.Fatalf("accepted an invalid request: %+v", z)
		}
	})
}

// A zap request's relays are each kept once, in normal form, and only if
// still valid once normalised: a receipt is never sent twice to one relay
// nor to a URL normalising broke.
func TestZapRequestRelaysNormalisedOnce(t *testing.T) {
	sk, recipient := nostr.GeneratePrivateKey(), nostr.GeneratePrivateKey()
	rpk, _ := nostr.GetPublicKey(recipient)
	raw := zapRequest(t, sk, rpk, func(e *nostr.Event) {
		e.Tags[0] = nostr.Tag{"relays", "wss://relay.example.com", "wss://Relay.Example.com/", "wss://u:p@host.example", "ws://127.0.0.1:7447"}
	})
	z, err := ParseZapRequest(raw, 21000, rpk, testLNURL)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"wss://relay.example.com", "wss://host.example", "ws://127.0.0.1:7447"}; strings.Join(z.Relays, " ") != strings.Join(want, " ") {
		t.Errorf("relays %q, want %q", z.Relays, want)
	}
}
