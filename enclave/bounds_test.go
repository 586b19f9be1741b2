package enclave_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lightningnetwork/lnd/lnrpc"
	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/internal/logging"
	"github.com/enclaved/enclaved/internal/testenv"
	"github.com/enclaved/enclaved/records"
)

// Certificates are asked for only for the instance's host and containers
// that run and serve HTTP: a quote is free, so a quote's name must not
// make the instance order a certificate (the domain's quota is finite).
func TestCertificatesOnlyForRunningContainers(t *testing.T) {
	relay := testenv.Relay(t)
	imgs := testenv.Images(t)
	inst := startInstance(t, t.TempDir(), []string{relay.URL}, "http.public_url=https://enclaved.test")
	ctx := context.Background()
	self := inst.key.PublicKey()
	serves := func(host string) bool { return inst.in.ServesHost(ctx, host) }
	if !serves("enclaved.test") || !serves("ENCLAVED.test") || !serves("enclaved.test.") {
		t.Error("no certificate for the instance's own host")
	}

	c := testenv.NewClient(t, relay.URL)
	c.Send(t, "nip17", self, "deploy "+imgs.Hello.Ref+" name=web port=8080")
	quote := c.Await(t, self, "Quote").Text
	if serves("web.enclaved.test") {
		t.Error("a certificate may be asked for an unpaid quote's name")
	}
	pay(t, quote)
	c.Await(t, self, "web is running")
	if !serves("web.enclaved.test") {
		t.Error("no certificate for a running container that serves HTTP")
	}
	c.Send(t, "nip17", self, "stop web")
	c.Await(t, self, "web is stopped")
	for _, host := range []string{"web.enclaved.test", "nosuch.enclaved.test", "web.other.test", "a.web.enclaved.test"} {
		if serves(host) {
			t.Errorf("a certificate may be asked for %s", host)
		}
	}
}

// Every LNURL callback makes an invoice at the operator's node, for free:
// callbacks are limited per client address and instance-wide, with LNURL
// errors that say when to come back; the limits refill with time; unpaid
// zap invoices are cancelled at the node and deleted an hour after they
// expired. A renter's DM is answered throughout.
func TestLNURLFloodIsBounded(t *testing.T) {
	relay := testenv.Relay(t)
	imgs := testenv.Images(t)
	ln := testenv.Lightning(t)
	inst := startInstance(t, t.TempDir(), []string{relay.URL},
		"http.invoices_per_client_per_minute=3", "http.invoices_per_minute=5")
	ctx := context.Background()
	owner := testenv.NewClient(t, relay.URL)
	inst.deploy(t, owner, "deploy "+imgs.Hello.Ref+" name=tip", "tip")
	_, port, _ := net.SplitHostPort(inst.http)

	// from asks for a 2-sat invoice from the loopback address ip.
	from := func(ip string) (int, map[string]string) {
		t.Helper()
		client := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{
			LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}).DialContext}}
		resp, err := client.Get("http://127.0.0.1:" + port + "/lnurlp/tip/callback?amount=2000")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]string
		json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}
	for i := range 3 {
		if code, body := from("127.0.0.1"); code != 200 || !strings.HasPrefix(body["pr"], "lnbcrt") {
			t.Fatalf("callback %d: %d %v", i+1, code, body)
		}
	}
	if code, body := from("127.0.0.1"); code != 429 || body["status"] != "ERROR" ||
		body["reason"] != "too many invoices asked for from your address (at most 3 a minute); try again in 20s" {
		t.Errorf("a client's 4th callback in a minute: %d %v", code, body)
	}
	for _, ip := range []string{"127.0.0.2", "127.0.0.3"} {
		if code, body := from(ip); code != 200 {
			t.Errorf("another client's callback: %d %v", code, body)
		}
	}
	if code, body := from("127.0.0.4"); code != 503 || !strings.HasPrefix(body["reason"], "busy: too many invoices asked for on this instance; try again in ") {
		t.Errorf("a callback over the instance's limit: %d %v", code, body)
	}
	if r := owner.Ask(t, "nip17", inst.key.PublicKey(), "help").Text; !strings.Contains(r, "rent a container") {
		t.Errorf("help during the flood: %q", r)
	}
	open := func() (rows, atNode int) {
		t.Helper()
		inst.db.QueryRow(`SELECT COUNT(*) FROM invoices WHERE purpose = 'lnurl'`).Scan(&rows)
		res, err := ln.Operator.Client.ListInvoices(ctx, &lnrpc.ListInvoiceRequest{PendingOnly: true, NumMaxInvoices: 10_000})
		if err != nil {
			t.Fatal(err)
		}
		for _, inv := range res.Invoices {
			if inv.State == lnrpc.Invoice_OPEN && inv.ValueMsat == 2000 {
				atNode++
			}
		}
		return rows, atNode
	}
	if rows, atNode := open(); rows != 5 || atNode < 5 {
		t.Errorf("after the flood: %d invoice rows, %d open 2-sat invoices at the node; want 5 of ours", rows, atNode)
	}

	// A minute later the first client may ask again.
	inst.clock.Add(time.Minute)
	if code, body := from("127.0.0.1"); code != 200 {
		t.Errorf("a callback a minute later: %d %v", code, body)
	}

	// An hour after they expired, unpaid zap invoices are gone.
	var hash string
	inst.db.QueryRow(`SELECT payment_hash FROM invoices WHERE purpose = 'lnurl' LIMIT 1`).Scan(&hash)
	inst.clock.Add(10*time.Minute + time.Hour + time.Second)
	if n, err := inst.in.Invoices.PruneExpired(ctx); err != nil || n != 6 {
		t.Errorf("pruned %d expired zap invoices (%v), want 6", n, err)
	}
	if rows, _ := open(); rows != 0 {
		t.Errorf("%d zap invoice rows after pruning", rows)
	}
	h, _ := hex.DecodeString(hash)
	if got, err := ln.Operator.Client.LookupInvoice(ctx, &lnrpc.PaymentHash{RHash: h}); err != nil || got.State != lnrpc.Invoice_CANCELED {
		t.Errorf("a pruned invoice at the node: %v %v, want cancelled", got.GetState(), err)
	}
	if rec := inst.container(t, "tip"); rec.State != records.StateRunning {
		t.Errorf("the zapped container is %s after the flood", rec.State)
	}
}

// Receipts that no relay takes are tried again later, backing off, and
// never hold up the receipts of later zaps: here more zaps than one
// publication pass handles wait for a relay that refuses their receipts.
func TestFailingReceiptsDoNotHoldUpOthers(t *testing.T) {
	relay := testenv.Relay(t)
	imgs := testenv.Images(t)
	inst := startInstance(t, t.TempDir(), []string{relay.URL},
		"http.invoices_per_client_per_minute=1000", "http.invoices_per_minute=1000")
	ctx := context.Background()
	owner := testenv.NewClient(t, relay.URL)
	inst.deploy(t, owner, "deploy "+imgs.Hello.Ref+" name=shy", "shy")
	inst.deploy(t, owner, "deploy "+imgs.Hello.Ref+" name=open", "open")
	shy, open := inst.container(t, "shy"), inst.container(t, "open")
	var refuse atomic.Bool
	refuse.Store(true)
	relay.Khatru.RejectEvent = append(relay.Khatru.RejectEvent, func(ctx context.Context, evt *nostr.Event) (bool, string) {
		if refuse.Load() && evt.Kind == 9735 && evt.Tags.FindWithValue("p", shy.Pubkey) != nil {
			return true, "blocked: not today"
		}
		return false, ""
	})
	callback := func(name string) string {
		return testenv.FetchPayRequest(t, "http://"+inst.http+"/.well-known/lnurlp/"+name).Callback
	}
	const stuck = 51 // more than one pass publishes
	cb := callback("shy")
	for range stuck {
		pay(t, testenv.ZapInvoice(t, cb, shy.Pubkey, relay.URL, 1000))
	}
	receipts := testenv.Subscribe(t, relay.URL, nostr.Filter{Kinds: []int{9735}, Tags: nostr.TagMap{"p": {open.Pubkey}}})
	pay(t, testenv.ZapInvoice(t, callback("open"), open.Pubkey, relay.URL, 1000))
	testenv.Next(t, receipts, "the receipt of a zap made after 51 whose receipts no relay takes")

	// The relay takes them again: after their backoff they are published.
	refuse.Store(false)
	inst.clock.Add(2 * time.Minute)
	if err := inst.in.Zaps.PublishPending(ctx); err != nil {
		t.Fatal(err)
	}
	if err := inst.in.Zaps.PublishPending(ctx); err != nil {
		t.Fatal(err)
	}
	var left int
	inst.db.QueryRow(`SELECT COUNT(*) FROM invoices WHERE purpose = 'zap' AND settled_at IS NOT NULL AND receipt_id IS NULL`).Scan(&left)
	rl, err := nostr.RelayConnect(ctx, relay.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer rl.Close()
	got, err := rl.QuerySync(ctx, nostr.Filter{Kinds: []int{9735}, Tags: nostr.TagMap{"p": {shy.Pubkey}}, Limit: 100})
	if err != nil || len(got) != stuck || left != 0 {
		t.Errorf("after the relay took receipts again: %d of %d receipts on the relay (%v), %d unpublished", len(got), stuck, err, left)
	}
}

// Nothing a renter wrote in a DM reaches the logs (which the untrusted
// parent keeps), at any level: not the text, not an env value, not an
// image the instance could not use.
func TestDMContentNeverLogged(t *testing.T) {
	relay := testenv.Relay(t)
	imgs := testenv.Images(t)
	var logs testenv.SyncBuffer
	log, err := logging.New(&logs, "debug", "text")
	if err != nil {
		t.Fatal(err)
	}
	inst := startInstanceLogged(t, t.TempDir(), []string{relay.URL}, &clock{}, nil, log)
	self := inst.key.PublicKey()
	c := testenv.NewClient(t, relay.URL)
	for _, tc := range []struct{ channel, text, want string }{
		{"nip17", "help me with marker-a1", "rent a container"},
		{"nip04", "status marker-b2", ""},
		{"nip17", "deploy 127.0.0.1:1/marker-c3/x:latest", "unreachable"},
		{"nip17", "deploy " + imgs.Hello.Ref + " name=marked env=TOKEN=marker-d4", "Quote"},
		{"nip17", "frobnicate marker-e5", ""},
	} {
		if r := c.Ask(t, tc.channel, self, tc.text).Text; !strings.Contains(r, tc.want) {
			t.Errorf("%q: %q", tc.text, r)
		}
	}
	for _, m := range []string{"marker-a1", "marker-b2", "marker-c3", "marker-d4", "marker-e5"} {
		if strings.Contains(logs.String(), m) {
			t.Errorf("the logs hold %q from a DM:\n%s", m, logs.String())
		}
	}
}
