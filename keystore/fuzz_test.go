package keystore_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/keystore"
	"github.com/enclaved/enclaved/nip"
)

// Whatever a requester encrypts, the key store answers with a reply it
// can decrypt (an error for nonsense), and never crashes.
func FuzzHandle(f *testing.F) {
	for _, s := range []string{
		`{"id":"1","method":"get","params":{"attestation":"AAAA"}}`,
		`{"id":"2","method":"set","params":{"data":"x","policy":{"ref":"r","release_pubkeys":["zz"]},"input":{"ref":"r"}}}`,
		`{"id":"3","method":"checkpoint","params":{"event":{"kind":13795,"tags":[["seq","-1"]]}}}`,
		`{"id":"4","method":"checkpoint","params":{"pubkey":""}}`,
		`{"id":5}`, `[]`, `null`, ``,
	} {
		f.Add(s)
	}
	sk := nostr.GeneratePrivateKey()
	keys, _ := nip.NewLocalKeys(sk)
	csk := nostr.GeneratePrivateKey()
	client, _ := nip.NewLocalKeys(csk)
	s := &keystore.Server{Keys: keys, Now: time.Now,
		Verify: func([]byte, time.Time) (keystore.Attested, error) { return keystore.Attested{}, errors.New("no") }}
	ctx := context.Background()
	self, _ := s.Pubkey(ctx)
	f.Fuzz(func(t *testing.T, plain string) {
		ct, err := client.Encrypt(ctx, plain, self)
		if err != nil {
			return // NIP-44 takes 1 to 65535 bytes
		}
		evt := nostr.Event{Kind: keystore.Kind, CreatedAt: nostr.Now(), Tags: nostr.Tags{{"p", self}}, Content: ct}
		evt.Sign(csk)
		reply := s.Handle(ctx, &evt)
		if reply == nil {
			t.Fatal("no reply")
		}
		out, err := client.Decrypt(ctx, reply.Content, self)
		if err != nil {
			t.Fatal(err)
		}
		var r keystore.Reply
		if err := json.Unmarshal([]byte(out), &r); err != nil || (r.Error == "" && r.Result == nil) {
			t.Fatalf("reply %q", out)
		}
	})
}
