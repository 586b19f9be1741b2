package enclave_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"
	"github.com/nbd-wtf/go-nostr/nip44"

	"github.com/enclaved/enclaved/httpapi"
	"github.com/enclaved/enclaved/internal/testenv"
)

// rpcClient is a program speaking the kind-29425 protocol of docs/rpc.md,
// written on go-nostr alone (none of enclaved's protocol code): what a
// third party's client would be.
type rpcClient struct {
	sk, pk, server string
	ck             [32]byte
	relays         map[string]*nostr.Relay
	replies        map[string]chan rpcReply // relay URL → replies heard there
}

type rpcReply struct {
	ID     string          `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  string          `json:"error"`
	evt    *nostr.Event
}

func newRPCClient(t *testing.T, server string, relays ...string) *rpcClient {
	t.Helper()
	c := &rpcClient{sk: nostr.GeneratePrivateKey(), server: server, relays: map[string]*nostr.Relay{}, replies: map[string]chan rpcReply{}}
	c.pk, _ = nostr.GetPublicKey(c.sk)
	ck, err := nip44.GenerateConversationKey(server, c.sk)
	if err != nil {
		t.Fatal(err)
	}
	c.ck = ck
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	for _, url := range relays {
		r, err := nostr.RelayConnect(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		since := nostr.Now() - 10
		sub, err := r.Subscribe(ctx, nostr.Filters{{Kinds: []int{29425}, Authors: []string{server}, Tags: nostr.TagMap{"p": {c.pk}}, Since: &since}})
		if err != nil {
			t.Fatal(err)
		}
		out := make(chan rpcReply, 64)
		c.relays[url], c.replies[url] = r, out
		go func() {
			for evt := range sub.Events {
				if ok, _ := evt.CheckSignature(); !ok || evt.Kind != 29425 || evt.PubKey != server {
					t.Errorf("reply event not signed by the instance: %v", evt)
					continue
				}
				if len(evt.Tags) != 1 || len(evt.Tags[0]) != 2 || evt.Tags[0][0] != "p" || evt.Tags[0][1] != c.pk {
					t.Errorf("reply tags %v, want exactly [[p %s]]", evt.Tags, c.pk)
				}
				plain, err := nip44.Decrypt(evt.Content, c.ck)
				var rep rpcReply
				if err == nil {
					err = json.Unmarshal([]byte(plain), &rep)
				}
				if err != nil {
					t.Errorf("reply does not decrypt to JSON: %v", err)
					continue
				}
				rep.evt = evt
				out <- rep
			}
		}()
	}
	return c
}

// request is a signed request carrying plaintext.
func (c *rpcClient) request(t *testing.T, plaintext string) nostr.Event {
	t.Helper()
	ct, err := nip44.Encrypt(plaintext, c.ck)
	if err != nil {
		t.Fatal(err)
	}
	evt := nostr.Event{Kind: 29425, CreatedAt: nostr.Now(), Tags: nostr.Tags{{"p", c.server}}, Content: ct}
	if err := evt.Sign(c.sk); err != nil {
		t.Fatal(err)
	}
	return evt
}

func newID() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// publish sends evt to the relay at url.
func (c *rpcClient) publish(t *testing.T, url string, evt nostr.Event) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.relays[url].Publish(ctx, evt); err != nil {
		t.Fatal(err)
	}
}

// await is the next reply heard on url; replies to other ids are errors.
func (c *rpcClient) await(t *testing.T, url, id string) rpcReply {
	t.Helper()
	select {
	case rep := <-c.replies[url]:
		if rep.ID != id {
			t.Fatalf("reply to id %q (%s %s), want one to %q", rep.ID, rep.Result, rep.Error, id)
		}
		return rep
	case <-time.After(30 * time.Second): // upstream's client gives up after 30 s too
		t.Fatalf("no reply to %s on %s", id, url)
	}
	panic("unreachable")
}

// call asks method with params on the relay at url and returns the reply.
func (c *rpcClient) call(t *testing.T, url, method string, params any) rpcReply {
	t.Helper()
	id := newID()
	body, err := json.Marshal(map[string]any{"id": id, "method": method, "params": params})
	if err != nil {
		t.Fatal(err)
	}
	c.publish(t, url, c.request(t, string(body)))
	return c.await(t, url, id)
}

// result is call's result decoded into v; an error reply fails the test.
func (c *rpcClient) result(t *testing.T, url, method string, params, v any) {
	t.Helper()
	rep := c.call(t, url, method, params)
	if rep.Error != "" {
		t.Fatalf("%s %v: error %q", method, params, rep.Error)
	}
	if err := json.Unmarshal(rep.Result, v); err != nil {
		t.Fatalf("%s result %s: %v", method, rep.Result, err)
	}
}

// fails is call's error, which must contain want.
func (c *rpcClient) fails(t *testing.T, url, method string, params any, want string) {
	t.Helper()
	rep := c.call(t, url, method, params)
	if rep.Error == "" || !strings.Contains(rep.Error, want) || len(rep.Result) > 0 && string(rep.Result) != "null" {
		t.Errorf("%s %v: got result %s error %q, want an error with %q", method, params, rep.Result, rep.Error, want)
	}
}

// ping waits until the instance listens on url: requests are ephemeral
// events, which a relay passes only to who listens at that moment.
func (c *rpcClient) ping(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		id := newID()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := c.relays[url].Publish(ctx, c.request(t, fmt.Sprintf(`{"id":%q,"method":"ping","params":[]}`, id)))
		cancel()
		if err != nil && strings.Contains(err.Error(), "no one was listening") && time.Now().Before(deadline) {
			// khatru refuses an ephemeral event nobody listens for.
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		select {
		case rep := <-c.replies[url]:
			if rep.ID != id || string(rep.Result) != `"pong"` || rep.Error != "" {
				t.Fatalf("ping %s: reply %q %s %q", id, rep.ID, rep.Result, rep.Error)
			}
			return
		case <-time.After(time.Second):
			if time.Now().After(deadline) {
				t.Fatal("the instance never answered ping")
			}
		}
	}
}

// A program drives the instance over kind-29425 RPC alone: ping, launch →
// pay → running, status, info, topup, logs, stop, start, delete,
// instance; every method's mistakes get a precise error; a request is
// answered once, on the relay it came by; the DMs' rate limit holds.
func TestRPC(t *testing.T) {
	a, b := testenv.Relay(t), testenv.Relay(t)
	imgs := testenv.Images(t)
	dc := testenv.Docker(t)
	inst := startInstance(t, t.TempDir(), []string{a.URL, b.URL}, "nostr.commands_per_minute=30")
	self := inst.key.PublicKey()
	c := newRPCClient(t, self, a.URL, b.URL)
	c.ping(t, a.URL)
	c.ping(t, b.URL)

	// launch → pay → running, as upstream's CLI does it.
	var launched struct {
		Pubkey  string `json:"pubkey"`
		Name    string `json:"name"`
		Npub    string `json:"npub"`
		Invoice struct {
			Type        string `json:"type"`
			Invoice     string `json:"invoice"`
			Description string `json:"description"`
			PaymentHash string `json:"payment_hash"`
			Amount      int64  `json:"amount"`
			CreatedAt   int64  `json:"created_at"`
			ExpiresAt   int64  `json:"expires_at"`
		} `json:"invoice"`
	}
	c.result(t, b.URL, "launch", map[string]any{"docker": imgs.Hello.Ref, "units": 1, "name": "rpc-app", "env": map[string]string{"GREETING": "hi"}}, &launched)
	inv := launched.Invoice
	if !nostr.IsValid32ByteHex(launched.Pubkey) || launched.Name != "rpc-app" || inv.Type != "incoming" || !strings.HasPrefix(inv.Invoice, "lnbcrt") ||
		inv.Amount != 10_000 || len(inv.PaymentHash) != 64 || inv.ExpiresAt <= inv.CreatedAt || !strings.Contains(inv.Description, "rpc-app") {
		t.Fatalf("launch result %+v", launched)
	}
	pay(t, inv.Invoice)
	waitState(t, inst, launched.Npub, "running")
	rec := inst.container(t, "rpc-app")
	if rec.Pubkey != launched.Pubkey {
		t.Errorf("launched pubkey %s, the container's is %s", launched.Pubkey, rec.Pubkey)
	}

	var status struct {
		Containers []struct {
			Name        string `json:"name"`
			Pubkey      string `json:"pubkey"`
			State       string `json:"state"`
			BalanceMsat int64  `json:"balance_msat"`
			PaidUntil   int64  `json:"paid_until"`
		} `json:"containers"`
	}
	c.result(t, a.URL, "status", map[string]any{}, &status)
	if len(status.Containers) != 1 || status.Containers[0].Pubkey != launched.Pubkey || status.Containers[0].State != "running" ||
		status.Containers[0].BalanceMsat <= 0 || status.Containers[0].BalanceMsat > 10_000 || status.Containers[0].PaidUntil == 0 {
		t.Errorf("status %+v", status)
	}
	var info struct {
		Name    string   `json:"name"`
		State   string   `json:"state"`
		EnvKeys []string `json:"env_keys"`
	}
	c.result(t, a.URL, "info", map[string]any{"pubkey": launched.Pubkey}, &info)
	if info.Name != "rpc-app" || info.State != "running" || len(info.EnvKeys) != 1 || info.EnvKeys[0] != "GREETING" {
		t.Errorf("info %+v", info)
	}
	var topup struct {
		Name    string `json:"name"`
		Invoice struct {
			Invoice string `json:"invoice"`
			Amount  int64  `json:"amount"`
		} `json:"invoice"`
	}
	c.result(t, a.URL, "topup", map[string]any{"container": "rpc-app", "sats": 5}, &topup)
	if topup.Name != "rpc-app" || topup.Invoice.Amount != 5_000 || !strings.HasPrefix(topup.Invoice.Invoice, "lnbcrt") {
		t.Errorf("topup %+v", topup)
	}
	testenv.WaitLog(t, dc, rec.DockerID, "listening")
	var logs struct {
		Logs string `json:"logs"`
	}
	c.result(t, a.URL, "logs", map[string]any{"container": "rpc-app", "lines": 20}, &logs)
	if !strings.Contains(logs.Logs, "listening") || !strings.Contains(logs.Logs, "GREETING=hi") {
		t.Errorf("logs %q", logs.Logs)
	}
	var facts httpapi.InstanceNow
	c.result(t, a.URL, "instance", map[string]any{}, &facts)
	if facts.Pubkey != self || facts.CapacityUnits != 4 || facts.FreeUnits != 3 || facts.MsatPerUnitHour != 10_000 || !facts.Dev {
		t.Errorf("instance %+v", facts)
	}
	var life struct {
		Name  string `json:"name"`
		State string `json:"state"`
	}
	c.result(t, a.URL, "stop", map[string]any{"container": "rpc-app"}, &life)
	if life.State != "stopped" {
		t.Errorf("stop: %+v", life)
	}
	c.result(t, a.URL, "start", map[string]any{"pubkey": launched.Pubkey}, &life)
	if life.State != "running" {
		t.Errorf("start: %+v", life)
	}

	// A request is answered once, and only on the relay it came by: the
	// same event sent twice to b, then a ping on a. Replies to one
	// sender go out in order, so a second answer (on b) or an answer
	// on a would be heard before the ping's.
	dup := c.request(t, `{"id":"dup-1","method":"status","params":{"container":"rpc-app"}}`)
	c.publish(t, b.URL, dup)
	c.await(t, b.URL, "dup-1")
	c.publish(t, b.URL, dup)
	c.ping(t, a.URL)
	c.ping(t, b.URL)

	// Every method's mistakes, each answered with a precise error.
	stranger := newRPCClient(t, self, a.URL)
	stranger.ping(t, a.URL)
	for _, tc := range []struct {
		method string
		params any
		want   string
	}{
		{"launch", map[string]any{"docker": imgs.Hello.Ref}, "launch: units is required"},
		{"launch", map[string]any{"units": 1}, "launch: docker is required"},
		{"launch", map[string]any{"docker": imgs.Hello.Ref, "units": "two"}, "launch: units: want a whole number from 1 to 64"},
		{"launch", map[string]any{"docker": imgs.Hello.Ref, "units": 65}, "launch: units: want a whole number from 1 to 64"},
		{"launch", map[string]any{"docker": "127.0.0.1:1/nothing@sha256:" + strings.Repeat("0", 64), "units": 1}, "cannot deploy"},
		{"quote", map[string]any{"image": imgs.Hello.Ref, "hours": 0}, "quote: hours: want a whole number from 1 to 2160"},
		{"quote", map[string]any{"image": imgs.Hello.Ref, "egress": []string{"example.com:443"}}, "egress"},
		{"quote", map[string]any{"image": imgs.Hello.Ref, "colour": "red"}, `quote: unknown param "colour"`},
		{"info", map[string]any{"pubkey": launched.Pubkey}, "not yours"},
		{"info", map[string]any{}, "info: container is required"},
		{"status", map[string]any{"container": "nothing-here"}, "no container nothing-here here"},
		{"topup", map[string]any{"container": "rpc-app"}, "topup: sats is required"},
		{"topup", map[string]any{"container": "rpc-app", "sats": 0}, "topup: sats: want a whole number"},
		{"logs", map[string]any{"container": "rpc-app"}, "not yours"},
		{"logs", map[string]any{"container": "rpc-app", "lines": 5000}, "logs: lines: want a whole number from 1 to 1000"},
		{"stop", map[string]any{"container": "rpc-app"}, "not yours"},
		{"start", map[string]any{}, "start: container is required"},
		{"delete", map[string]any{"container": "rpc-app", "name": "other"}, "name different containers"},
		{"instance", map[string]any{"verbose": true}, "instance takes no params"},
		{"ping", nil, "pong"}, // ping answers whatever its params (checked below)
		{"upgrade", map[string]any{}, `unknown method "upgrade"`},
	} {
		if tc.method == "ping" {
			continue
		}
		stranger.fails(t, a.URL, tc.method, tc.params, tc.want)
	}
	for _, bad := range []struct{ plaintext, id, want string }{
		{`not json`, "", "bad request: want a JSON object"},
		{`{"id":"x1","params":{}}`, "x1", "bad request: method must be a non-empty string"},
		{`{"id":7,"method":"ping","params":[]}`, "", "bad request: id must be a string"},
		{`{"id":"x2","method":"status","params":"all"}`, "x2", "bad request: params must be an object"},
	} {
		stranger.publish(t, a.URL, stranger.request(t, bad.plaintext))
		if rep := stranger.await(t, a.URL, bad.id); !strings.Contains(rep.Error, bad.want) {
			t.Errorf("%s: error %q, want %q", bad.plaintext, rep.Error, bad.want)
		}
	}
	// Content the instance cannot read (NIP-04, say) still gets an answer.
	unreadable := nostr.Event{Kind: 29425, CreatedAt: nostr.Now(), Tags: nostr.Tags{{"p", self}}, Content: "aGVsbG8=?iv=aGVsbG8="}
	unreadable.Sign(stranger.sk)
	stranger.publish(t, a.URL, unreadable)
	if rep := stranger.await(t, a.URL, ""); !strings.Contains(rep.Error, "not NIP-44 v2") {
		t.Errorf("unreadable request: error %q", rep.Error)
	}

	var deleted struct {
		State string `json:"state"`
	}
	c.result(t, a.URL, "delete", map[string]any{"container": "rpc-app"}, &deleted)
	if deleted.State != "removed" {
		t.Errorf("delete: %+v", deleted)
	}

	// The DMs' rate limit: 30 a minute, then one "slow down", then silence.
	flood := newRPCClient(t, self, a.URL)
	flood.ping(t, a.URL)
	for i := 1; i < 30; i++ {
		if rep := flood.call(t, a.URL, "ping", []any{}); string(rep.Result) != `"pong"` {
			t.Fatalf("ping %d: %s %q", i, rep.Result, rep.Error)
		}
	}
	flood.fails(t, a.URL, "ping", []any{}, "slow down: at most 30 commands per 1m0s")
}

// waitState polls the public HTTP API until the container npub is in state.
func waitState(t *testing.T, inst *instance, npub, state string) {
	t.Helper()
	testenv.Eventually(t, time.Minute, "container "+npub+" "+state, func() bool {
		var got httpapi.Container
		return inst.get(t, "/api/v1/containers/"+npub, &got) == http.StatusOK && got.State == state
	})
}
