package enclave_test

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/chaincfg"
	"github.com/hf/nitrite"
	"github.com/lightningnetwork/lnd/zpay32"
	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/internal/testenv"
	"github.com/enclaved/enclaved/nip"
	"github.com/enclaved/enclaved/records"
)

// payRequest is the LNURL-pay answer, read as a wallet does.
type payRequest struct {
	Tag            string `json:"tag"`
	Callback       string `json:"callback"`
	MinSendable    int64  `json:"minSendable"`
	MaxSendable    int64  `json:"maxSendable"`
	Metadata       string `json:"metadata"`
	CommentAllowed int    `json:"commentAllowed"`
	AllowsNostr    bool   `json:"allowsNostr"`
	NostrPubkey    string `json:"nostrPubkey"`
	Status         string `json:"status"`
	Reason         string `json:"reason"`
}

func getJSON(t *testing.T, u string, v any) int {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	return resp.StatusCode
}

// A supporter zaps a paused container from a client written with go-nostr
// alone: LNURL-pay with NIP-57, a valid receipt on the relay, the balance
// up by exactly the amount, the container running again.
func TestZapResumesPausedContainer(t *testing.T) {
	relay := testenv.Relay(t)
	imgs := testenv.Images(t)
	inst := startInstance(t, t.TempDir(), []string{relay.URL})
	self := inst.key.PublicKey()
	owner := testenv.NewClient(t, relay.URL)
	ctx := context.Background()

	inst.deploy(t, owner, "deploy "+imgs.Hello.Ref+" name=zapme", "zapme")
	inst.clock.Add(61 * time.Minute)
	if _, err := inst.in.Deployer.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	owner.Await(t, self, "zapme is paused")
	rec := inst.container(t, "zapme")

	// The container's profile names its lightning address; its status
	// event carries the instance's certificate for its key.
	var lud16 string
	var status *nostr.Event
	own := testenv.Subscribe(t, relay.URL, nostr.Filter{Kinds: []int{0, 63797}, Authors: []string{rec.Pubkey}})
	for lud16 == "" || status == nil {
		evt := testenv.Next(t, own, "kind-0 profile and kind-63797 status of the container")
		if ok, _ := evt.CheckSignature(); !ok {
			t.Fatalf("kind %d not signed by the container key", evt.Kind)
		}
		if evt.Kind == 63797 {
			status = evt
			continue
		}
		var p map[string]string
		json.Unmarshal([]byte(evt.Content), &p)
		lud16 = p["lud16"]
		if p["name"] != "zapme" || p["nip05"] != lud16 || !strings.Contains(p["about"], imgs.Hello.Digest) {
			t.Errorf("container profile %s", evt.Content)
		}
	}
	var cert nostr.Event
	if tc := status.Tags.Find("tee_cert"); tc == nil || json.Unmarshal([]byte(tc[1]), &cert) != nil {
		t.Fatalf("status without a tee_cert: %v", status.Tags)
	}
	if ok, _ := cert.CheckSignature(); !ok || cert.Kind != 23797 || cert.PubKey != self || cert.Tags.FindWithValue("p", rec.Pubkey) == nil ||
		cert.Tags.FindWithValue("r", "docker://"+imgs.Hello.Ref) == nil || cert.Tags.Find("expiration") == nil {
		t.Errorf("certificate %+v", cert)
	}
	// tee_root: the instance's attestation event, whose document binds the
	// instance key under the dev root.
	var root nostr.Event
	if tr := status.Tags.Find("tee_root"); tr == nil || json.Unmarshal([]byte(tr[1]), &root) != nil {
		t.Fatalf("status without a tee_root: %v", status.Tags)
	}
	doc, err := base64.StdEncoding.DecodeString(root.Content)
	if ok, _ := root.CheckSignature(); err != nil || !ok || root.Kind != 23793 || root.PubKey != self || root.Tags.FindWithValue("t", "dev") == nil {
		t.Fatalf("tee_root %+v", root)
	}
	pool := x509.NewCertPool()
	pool.AddCert(inst.attester.Root())
	res, err := nitrite.Verify(doc, nitrite.VerifyOptions{Roots: pool, CurrentTime: inst.clock.Now()})
	if err != nil || hex.EncodeToString(res.Document.PublicKey) != self {
		t.Fatalf("attestation: %v", err)
	}
	if status.Tags.FindWithValue("t", "dev") == nil || cert.Tags.FindWithValue("t", "dev") == nil {
		t.Error("a dev instance's container events lack t=dev")
	}
	if status.Tags.FindWithValue("p", self) == nil || status.Tags.Find("state") == nil || status.Tags.Find("balance") == nil ||
		status.Tags.FindWithValue("r", imgs.Hello.Ref) == nil {
		t.Errorf("status tags %v", status.Tags)
	}
	name, domain, _ := strings.Cut(lud16, "@")
	if name != "zapme" || domain != inst.http {
		t.Fatalf("lud16 %q", lud16)
	}
	var names struct{ Names map[string]string }
	getJSON(t, "http://"+domain+"/.well-known/nostr.json?name=zapme", &names)
	if names.Names["zapme"] != rec.Pubkey {
		t.Errorf("NIP-05: %v", names.Names)
	}

	getJSON(t, "http://"+domain+"/.well-known/nostr.json?name=enclaved", &names)
	if names.Names["enclaved"] != self {
		t.Errorf("NIP-05 of the instance: %v", names.Names)
	}

	var pr payRequest
	if code := getJSON(t, "http://"+domain+"/.well-known/lnurlp/"+name, &pr); code != http.StatusOK {
		t.Fatalf("lnurlp: %d %+v", code, pr)
	}
	if pr.Tag != "payRequest" || !pr.AllowsNostr || !nostr.IsValidPublicKey(pr.NostrPubkey) || pr.MinSendable < 1 || pr.MaxSendable < pr.MinSendable ||
		!strings.Contains(pr.Metadata, `"text/identifier","zapme@`) || !strings.Contains(pr.Metadata, `"text/plain"`) || pr.CommentAllowed <= 0 {
		t.Fatalf("pay request %+v", pr)
	}

	// Plain LNURL-pay (no zap request): the invoice commits to the metadata.
	var plain struct{ PR string }
	getJSON(t, pr.Callback+"?amount=2000", &plain)
	if inv, err := zpay32.Decode(plain.PR, &chaincfg.RegressionNetParams); err != nil || inv.DescriptionHash == nil ||
		*inv.DescriptionHash != sha256.Sum256([]byte(pr.Metadata)) || int64(*inv.MilliSat) != 2000 {
		t.Errorf("plain LNURL-pay invoice: %v", err)
	}

	supporter := nostr.GeneratePrivateKey()
	const amount = 30_000 // msat: 3 min at 10 sats an hour
	zr := nostr.Event{Kind: 9734, CreatedAt: nostr.Now(), Content: "keep going", Tags: nostr.Tags{
		{"relays", relay.URL}, {"amount", strconv.Itoa(amount)}, {"p", rec.Pubkey},
	}}
	zr.Sign(supporter)
	raw, _ := json.Marshal(zr)
	var inv struct {
		PR     string `json:"pr"`
		Status string `json:"status"`
		Reason string `json:"reason"`
	}
	wrongP := nostr.Event{Kind: 9734, CreatedAt: nostr.Now(), Tags: nostr.Tags{{"relays", relay.URL}, {"p", self}}}
	wrongP.Sign(supporter)
	wrongRaw, _ := json.Marshal(wrongP)
	for query, want := range map[string]string{
		"amount=1":    "outside",
		"amount=abc":  "not a whole number",
		"amount=1500": "not a whole number of sats",
		"amount=" + strconv.Itoa(amount+1000) + "&nostr=" + url.QueryEscape(string(raw)): "does not equal the amount parameter",
		"amount=1000&nostr=" + url.QueryEscape(string(wrongRaw)):                         "p tag is not this recipient",
	} {
		var e payRequest
		if code := getJSON(t, pr.Callback+"?"+query, &e); code == http.StatusOK || e.Status != "ERROR" || !strings.Contains(e.Reason, want) {
			t.Errorf("callback ?%s: %d %+v, want ERROR %q", query[:min(len(query), 30)], code, e, want)
		}
	}
	cb := pr.Callback + "?amount=" + strconv.Itoa(amount) + "&nostr=" + url.QueryEscape(string(raw))
	if code := getJSON(t, cb, &inv); code != http.StatusOK || inv.PR == "" {
		t.Fatalf("callback: %d %+v", code, inv)
	}
	decoded, err := zpay32.Decode(inv.PR, &chaincfg.RegressionNetParams)
	if err != nil {
		t.Fatal(err)
	}
	if want := sha256.Sum256(raw); decoded.DescriptionHash == nil || *decoded.DescriptionHash != want || decoded.MilliSat == nil || int64(*decoded.MilliSat) != amount {
		t.Fatalf("invoice: description hash %x, amount %v", decoded.DescriptionHash, decoded.MilliSat)
	}

	// Watch for the receipt before paying.
	receipts := testenv.Subscribe(t, relay.URL, nostr.Filter{Kinds: []int{9735}, Tags: nostr.TagMap{"p": {rec.Pubkey}}})
	pay(t, inv.PR)
	receipt := testenv.Next(t, receipts, "zap receipt on the relay")
	if ok, _ := receipt.CheckSignature(); !ok || receipt.PubKey != pr.NostrPubkey {
		t.Errorf("receipt signed by %s, want nostrPubkey %s", receipt.PubKey, pr.NostrPubkey)
	}
	desc := receipt.Tags.Find("description")
	bolt := receipt.Tags.Find("bolt11")
	if desc == nil || bolt == nil || desc[1] != string(raw) || bolt[1] != inv.PR || receipt.Tags.FindWithValue("P", zr.PubKey) == nil {
		t.Fatalf("receipt tags %v", receipt.Tags)
	}
	if h := sha256.Sum256([]byte(desc[1])); h != *decoded.DescriptionHash {
		t.Error("description does not match the invoice's hash")
	}
	preimage, _ := hex.DecodeString(receipt.Tags.Find("preimage")[1])
	if h := sha256.Sum256(preimage); decoded.PaymentHash == nil || h != *decoded.PaymentHash {
		t.Error("the receipt's preimage does not match the invoice's payment hash")
	}

	// Resumed first, then told who zapped (in that order).
	owner.Await(t, self, "zapme is running again")
	owner.Await(t, self, "zapme was zapped 30 sats by npub1")
	if got := inst.container(t, "zapme"); got.State != records.StateRunning || got.BalanceMsat != rec.BalanceMsat+amount {
		t.Errorf("after the zap: %s, balance %d, want running with %d", got.State, got.BalanceMsat, rec.BalanceMsat+amount)
	}
}

// The callback refuses, with LNURL errors, what it must not invoice.
func TestZapCallbackRefusals(t *testing.T) {
	relay := testenv.Relay(t)
	inst := startInstance(t, t.TempDir(), []string{relay.URL})
	base := "http://" + inst.http
	for path, want := range map[string]string{
		"/.well-known/lnurlp/nobody":          "no container nobody",
		"/lnurlp/nobody/callback?amount=1000": "no container nobody",
		"/.well-known/lnurlp/BAD%20NAME":      "not a valid name",
	} {
		var pr payRequest
		code := getJSON(t, base+path, &pr)
		if code == http.StatusOK || pr.Status != "ERROR" || !strings.Contains(pr.Reason, want) {
			t.Errorf("%s: %d %+v, want ERROR %q", path, code, pr, want)
		}
	}
}

// BenchmarkZapSettlementToReceipt measures from the payer's settled zap to
// the receipt arriving on the relay with the balance credited.
func BenchmarkZapSettlementToReceipt(b *testing.B) {
	relay := testenv.Relay(b)
	imgs := testenv.Images(b)
	inst := startInstanceB(b, relay.URL)
	ctx := context.Background()
	q, err := inst.in.Quoter.Quote(ctx, nostr.GeneratePrivateKey(), "nip17", nip.Command{Verb: nip.VerbDeploy, Image: imgs.Hello.Ref, Units: 1, Hours: 1, Name: "bench-zap"})
	if err != nil {
		b.Fatal(err)
	}
	pay(b, q.Invoice.Bolt11)
	rec, err := inst.in.Deployer.Records.Get(ctx, q.ContainerID)
	if err != nil {
		b.Fatal(err)
	}
	receipts := testenv.Subscribe(b, relay.URL, nostr.Filter{Kinds: []int{9735}, Tags: nostr.TagMap{"p": {rec.Pubkey}}})
	callback := "http://" + inst.http + "/lnurlp/bench-zap/callback"
	for b.Loop() {
		b.StopTimer()
		before, _ := inst.in.Deployer.Records.Get(ctx, q.ContainerID)
		pay(b, testenv.ZapInvoice(b, callback, rec.Pubkey, relay.URL, 2000))
		b.StartTimer()
		testenv.Next(b, receipts, "receipt")
		for { // the credit commits before the receipt is built; this rarely loops
			r, _ := inst.in.Deployer.Records.Get(ctx, q.ContainerID)
			if r.BalanceMsat >= before.BalanceMsat+2000-100 {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
}

// A zap invoice handed out before its container was removed cannot be
// paid after: the removal cancels it at the node, so the payer keeps the
// money and nothing is credited to a removed container. (A payment that
// settles in the race is recorded unclaimed: see money_test.go.)
func TestZapInvoiceCancelledAtRemoval(t *testing.T) {
	relay := testenv.Relay(t)
	imgs := testenv.Images(t)
	inst := startInstance(t, t.TempDir(), []string{relay.URL})
	self := inst.key.PublicKey()
	owner := testenv.NewClient(t, relay.URL)
	inst.deploy(t, owner, "deploy "+imgs.Hello.Ref+" name=gone", "gone")
	var inv struct{ PR string }
	getJSON(t, "http://"+inst.http+"/lnurlp/gone/callback?amount=4000", &inv)
	owner.Send(t, "nip17", self, "delete gone")
	owner.Await(t, self, "gone is deleted")
	if _, err := testenv.Lightning(t).Payer.Pay(context.Background(), inv.PR); err == nil {
		t.Fatal("the zap invoice of a removed container was paid")
	}
	var credits int
	inst.db.QueryRow(`SELECT COUNT(*) FROM ledger WHERE container_id = ? AND kind = 'credit'`, inst.container(t, "gone").ID).Scan(&credits)
	if got := inst.container(t, "gone"); got.State != records.StateRemoved || credits != 1 {
		t.Errorf("after a zap attempt to a removed container: %s, %d credits (want the deploy's only)", got.State, credits)
	}
}
