package keystore_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/internal/testenv"
	"github.com/enclaved/enclaved/keystore"
	"github.com/enclaved/enclaved/nip"
)

// replier answers key store requests on a relay as a hostile key store
// (or a relay forging its replies) would: first with the fuzzer's reply,
// then with a valid one carrying a sentinel result. A client that refuses
// the first gets the second.
type replier struct {
	keys  *nip.LocalKeys
	pool  *nostr.SimplePool
	relay string
	// next is the reply to send: its plaintext ("$ID" is the request's
	// id) or, raw, the event content as is; and the sentinel result.
	next atomic.Pointer[fuzzReply]
}

type fuzzReply struct {
	body     string
	raw      bool
	sentinel json.RawMessage
	sent     chan bool // whether the relay took the fuzzer's reply
	// takeable: the client must take the fuzzer's reply, so no valid
	// reply follows it (a subscription may hand on two replies that come
	// together in either order: go-nostr dispatches each on a goroutine).
	takeable bool
}

func (r *replier) serve(ctx context.Context, self string) {
	for re := range r.pool.SubscribeMany(ctx, []string{r.relay}, nostr.Filter{Kinds: []int{keystore.Kind}, Tags: nostr.TagMap{"p": {self}}}) {
		fr := r.next.Load()
		plain, err := r.keys.Decrypt(ctx, re.Event.Content, re.Event.PubKey)
		var req keystore.Request
		if fr == nil || re.Event.PubKey == self || err != nil || json.Unmarshal([]byte(plain), &req) != nil || req.Method == "" {
			continue
		}
		content := fr.body
		if !fr.raw {
			content, err = r.keys.Encrypt(ctx, strings.ReplaceAll(fr.body, "$ID", req.ID), re.Event.PubKey)
		}
		sent := err == nil && r.publish(ctx, re.Event.PubKey, content) == nil
		if !sent || !fr.takeable {
			good, _ := json.Marshal(keystore.Reply{ID: req.ID, Result: fr.sentinel})
			ct, _ := r.keys.Encrypt(ctx, string(good), re.Event.PubKey)
			r.publish(ctx, re.Event.PubKey, ct)
		}
		select {
		case fr.sent <- sent:
		default:
		}
	}
}

func (r *replier) publish(ctx context.Context, to, content string) error {
	evt := nostr.Event{Kind: keystore.Kind, CreatedAt: nostr.Now(), Tags: nostr.Tags{{"p", to}}, Content: content}
	if err := r.keys.SignEvent(ctx, &evt); err != nil {
		return err
	}
	for res := range r.pool.PublishMany(ctx, []string{r.relay}, evt) {
		return res.Error
	}
	return errors.New("not published")
}

// FuzzClientReply has a key store answer a client's get, has and
// checkpoint calls with the fuzzer's reply, over a real relay: the client
// takes a reply only when it decrypts, is JSON and carries the request's
// id; then the key store's error comes back as a *RemoteError with its
// text, and a result as sent (a get's string, a checkpoint's event); any
// other reply is skipped for the next one. The checkpoint it returns goes
// to nip.ParseCheckpoint, as a boot's does.
func FuzzClientReply(f *testing.F) {
	for _, s := range []string{
		`{"id":"$ID","result":"s3cret"}`, `{"id":"$ID","result":true}`, `{"id":"$ID","error":"Not found"}`,
		`{"id":"$ID","error":"policy: 0 of 2 maintainers"}`, `{"id":"$ID","result":{"kind":13795,"tags":[["seq","1"]]}}`,
		`{"id":"$ID"}`, `{"id":"$ID","result":null}`, `{"id":"other","result":"x"}`, `{"id":"$ID","result":"a","error":""}`,
		`[]`, `null`, `{"id":"$ID","result":1e999}`, `{"id":"$ID","result":"\ud800"}`,
	} {
		for which := range uint8(3) {
			f.Add(which, false, s)
		}
	}
	f.Add(uint8(0), true, "AgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Add(uint8(1), true, "#")
	f.Add(uint8(2), true, "")

	ctx, cancel := context.WithCancel(context.Background())
	f.Cleanup(cancel)
	relay := testenv.Relay(f).URL
	pool := nostr.NewSimplePool(ctx)
	f.Cleanup(func() { pool.Close("test over") })
	sk := nostr.GeneratePrivateKey()
	keys, _ := nip.NewLocalKeys(sk)
	self, _ := keys.GetPublicKey(ctx)
	r := &replier{keys: keys, pool: pool, relay: relay}
	go r.serve(ctx, self)

	// The sentinels: what the valid reply carries for each call.
	cp := nip.CheckpointEvent(nip.Checkpoint{Seq: 1, SHA256: strings.Repeat("00", 32), Size: 1, Blob: "state-a"}, "dev", nostr.Now())
	cp.Sign(sk)
	cpJSON, _ := json.Marshal(cp)
	sentinels := [3]json.RawMessage{json.RawMessage(`"sentinel"`), json.RawMessage(`"sentinel"`), cpJSON}

	call := func(t testing.TB, timeout time.Duration, which uint8, raw bool, body string) (res any, err error, sent bool) {
		ck, _ := nip.NewLocalKeys(nostr.GeneratePrivateKey())
		c := &keystore.Client{Server: self, Relays: []string{relay}, Pool: pool, Keys: ck, Timeout: timeout, Attempts: 1,
			Attest: func(context.Context, []byte) ([]byte, error) { return []byte("doc"), nil }}
		fr := &fuzzReply{body: body, raw: raw, sentinel: sentinels[which], sent: make(chan bool, 1), takeable: takeable(raw, body)}
		r.next.Store(fr)
		switch which {
		case 0:
			res, err = c.Call(ctx, "has", keystore.Params{})
		case 1:
			res, err = c.Get(ctx, nil)
		default:
			res, err = c.NewestCheckpoint(ctx, self)
		}
		select {
		case sent = <-fr.sent:
		case <-time.After(timeout):
			t.Fatalf("the key store never answered: %v", err)
		}
		return res, err, sent
	}
	// The replier's subscription is up before the first input.
	for i := 0; ; i++ {
		ck, _ := nip.NewLocalKeys(nostr.GeneratePrivateKey())
		c := &keystore.Client{Server: self, Relays: []string{relay}, Pool: pool, Keys: ck, Timeout: time.Second, Attempts: 1}
		r.next.Store(&fuzzReply{body: `{"id":"$ID","result":"up"}`, sentinel: sentinels[0], sent: make(chan bool, 1)})
		if _, err := c.Call(ctx, "has", keystore.Params{}); err == nil {
			break
		} else if i == 20 {
			f.Fatal(err)
		}
	}

	f.Fuzz(func(t *testing.T, which uint8, raw bool, body string) {
		which %= 3
		res, err, sent := call(t, 20*time.Second, which, raw, body)
		// What the client should make of the fuzzer's reply.
		// It is taken when, with the request's id in place of "$ID", it
		// is a JSON reply whose id is that id: two stand-ins for the id
		// tell an id that came from "$ID" from one that is spelt out.
		var want keystore.Reply
		json.Unmarshal([]byte(strings.ReplaceAll(body, "$ID", idA)), &want)
		taken := sent && takeable(raw, body)
		if sent && !raw && want.ID == idA && !taken {
			return // the id appears in the result or error too
		}
		var re *keystore.RemoteError
		switch {
		case !taken:
			// Skipped: the valid reply after it is the answer.
			if err != nil {
				t.Fatalf("an untaken reply %q made the call fail: %v", body, err)
			}
			switch v := res.(type) {
			case json.RawMessage:
				if !bytes.Equal(v, sentinels[0]) {
					t.Fatalf("result %s from a reply that should have been skipped", v)
				}
			case string:
				if v != "sentinel" {
					t.Fatalf("secret %q from a reply that should have been skipped", v)
				}
			case *nostr.Event:
				if v == nil || v.ID != cp.ID {
					t.Fatalf("checkpoint %v from a reply that should have been skipped", v)
				}
			}
		case want.Error != "":
			if which == 2 && strings.HasPrefix(want.Error, keystore.ErrNotFound) {
				if err != nil || res.(*nostr.Event) != nil {
					t.Fatalf("not found gave %v, %v", res, err)
				}
				return
			}
			if !errors.As(err, &re) || re.Text != want.Error {
				t.Fatalf("the key store's error %q came back as %v", want.Error, err)
			}
		default:
			switch which {
			case 0:
				if err != nil || !bytes.Equal(res.(json.RawMessage), want.Result) {
					t.Fatalf("result %s came back as %s, %v", want.Result, res, err)
				}
			case 1:
				var s string
				if json.Unmarshal(want.Result, &s) == nil {
					if err != nil || res.(string) != s {
						t.Fatalf("secret %q came back as %q, %v", s, res, err)
					}
				} else if err == nil {
					t.Fatalf("result %s taken as the secret %q", want.Result, res)
				}
			case 2:
				if e, _ := res.(*nostr.Event); err == nil && e != nil {
					nip.ParseCheckpoint(e) // must not panic on what a key store returns
				} else if err == nil {
					t.Fatal("no checkpoint and no error")
				}
			}
		}
	})
}

// Two stand-ins for a request's id, to tell an id that came from "$ID"
// from one spelt out.
const idA, idB = "0123456789abcdef01234567", "76543210fedcba9876543210"

// takeable says whether the fuzzer's reply body, with the request's id in
// place of "$ID", is a JSON reply to that request whatever the id (so the
// client takes it): an id spelt out, or one inside the result or error
// too, makes it not.
func takeable(raw bool, body string) bool {
	var a, b keystore.Reply
	return !raw &&
		json.Unmarshal([]byte(strings.ReplaceAll(body, "$ID", idA)), &a) == nil && a.ID == idA &&
		json.Unmarshal([]byte(strings.ReplaceAll(body, "$ID", idB)), &b) == nil && b.ID == idB &&
		a.Error == b.Error && bytes.Equal(a.Result, b.Result)
}
