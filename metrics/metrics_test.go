package metrics_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/backup"
	"github.com/enclaved/enclaved/billing"
	"github.com/enclaved/enclaved/egress"
	"github.com/enclaved/enclaved/egressproxy"
	"github.com/enclaved/enclaved/internal/testenv"
	"github.com/enclaved/enclaved/metrics"
	"github.com/enclaved/enclaved/nip"
	"github.com/enclaved/enclaved/parent"
	"github.com/enclaved/enclaved/records"
	"github.com/enclaved/enclaved/store"
	"github.com/enclaved/enclaved/tunnel"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// The metrics as the operator reads them in production: served by the
// enclave's side on the ingress port the parent forwards its own listener
// to, over a real link; read afresh from a real database (the production
// open path) through records and billing, from a real backuper (blobs at
// the parent, checkpoints at a key store), the link's keeper and the
// containers' egress proxies. promtool finds no problem in what is
// served, and a real Prometheus scraping the parent's port reads back
// what was set up, and a credit made between scrapes.
func TestPrometheusScrapesThroughTheParent(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	now := time.Now()
	dir := t.TempDir()

	// The instance's state: its database, with containers and money in it.
	sec, err := backup.NewSecrets(nostr.GeneratePrivateKey())
	if err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(ctx, filepath.Join(dir, "enclaved.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.ClaimInstance(ctx, sec.Pubkey()); err != nil {
		t.Fatal(err)
	}
	recs := records.New(db, time.Now)
	invoices := &billing.Invoices{DB: db, Now: time.Now}
	ledger := billing.NewLedger(db)
	owner := nostr.GeneratePrivateKey() // stands for a renter's pubkey: never shown
	quote := func(id string, units int64) {
		ok, err := recs.InsertQuote(ctx, records.NewQuote{ID: id, Name: "name-" + id, Owner: owner, Channel: "nip17",
			Image: "img", ImageRef: "img@sha256:00", ImageSize: 1, Units: units, PriceMsat: 1000}, records.QuoteCaps{})
		if err != nil || !ok {
			t.Fatalf("quote %s: %v %v", id, ok, err)
		}
	}
	invoice := func(id, hash, purpose string, msat int64) {
		if err := invoices.Record(ctx, billing.Request{ContainerID: id, Purpose: purpose, AmountMsat: msat},
			billing.Invoice{PaymentHash: hash, Bolt11: "lnbc", ExpiresAt: now.Add(10 * time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}
	settle := func(hash string, msat int64) {
		if c, err := ledger.ApplySettlement(ctx, billing.Settlement{PaymentHash: hash, AmountMsat: msat, SettledAt: time.Now()}); err != nil || !c.Applied {
			t.Fatalf("settle %s: %+v %v", hash, c, err)
		}
	}
	start := now.Add(-time.Hour)
	quote("aa01", 2) // paid, running for an hour: 2 units × 1000 msat = 2000 msat charged
	invoice("aa01", "h1", "deploy", 2000)
	settle("h1", 5_000_000)
	if err := recs.Transition(ctx, "aa01", records.StateRunning, "", func(tx *sql.Tx) error {
		return billing.StartMetering(ctx, tx, "aa01", start)
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := ledger.Charge(ctx, "aa01", start.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	invoice("aa01", "h3", "topup", 1000) // an open top-up
	quote("aa02", 1)                     // a quote waiting for payment
	invoice("aa02", "h2", "deploy", 1000)
	quote("aa03", 1) // paid, then stopped by its owner
	invoice("aa03", "h4", "deploy", 1000)
	settle("h4", 1000)
	if err := recs.Transition(ctx, "aa03", records.StateStopped, "stopped by its owner", nil); err != nil {
		t.Fatal(err)
	}

	// The parent, linked to the enclave's side, forwarding its metrics
	// listener to the enclave's ingress port of the same number.
	const metricsPort = 9464
	srv := &parent.Server{BlobDir: t.TempDir(), LogOut: io.Discard}
	ingress := tunnel.NewIngress(443, metricsPort)
	keeper := testenv.ParentLink(t, srv, ingress.Handle)
	if _, err := keeper.Session(ctx); err != nil {
		t.Fatal(err)
	}
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Forward(ctx, pl, metricsPort)
	target := pl.Addr().String()

	// One backup saved and one failed, as the enclave takes them.
	ks := testenv.NewKeyStore(t)
	kc := ks.Client(ks.Attestor("build", "i-0123456789abcdef0"))
	if err := kc.Set(ctx, sec.Marshal(), nil, nil); err != nil {
		t.Fatal(err)
	}
	keys, _ := nip.NewLocalKeys(sec.InstanceKey)
	bk := &backup.Backuper{DB: db, Blobs: tunnel.Blobs{Link: keeper}, Secrets: sec, Keys: keys, Mode: "dev", Dir: dir,
		Record: kc.RecordCheckpoint}

	// A container's egress proxy refusing a connection to a destination
	// it did not ask for.
	proxies := &egressproxy.Manager{Dial: func(ctx context.Context, _, addr string) (net.Conn, error) {
		return nil, errors.New("no dial expected")
	}}
	defer proxies.Close(context.Background())
	plan, err := egress.NewPlan([]string{"api.example.com:443"})
	if err != nil {
		t.Fatal(err)
	}
	if err := proxies.Confine(ctx, "web", "", netip.MustParseAddr("127.0.0.1"), plan); err != nil {
		t.Fatal(err)
	}

	mx := metrics.New("v-test")
	mx.Records, mx.Invoices, mx.Ledger, mx.Capacity, mx.QuoteExpiry = recs, invoices, ledger, 8, 10*time.Minute
	mx.Backups, mx.Link, mx.Egress = bk, keeper, proxies
	bk.Observe = mx.BackupDone
	go mx.Serve(ctx, ingress.Listener(metricsPort))

	cp, err := bk.Backup(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cctx, ccancel := context.WithCancel(ctx)
	ccancel()
	if _, err := bk.Backup(cctx); err == nil {
		t.Fatal("a backup with its context canceled succeeded")
	}
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", proxies.Port("web")))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, c) // closed, refused
	c.Close()

	// The bot's commands, as bot.Config.Observe reports them.
	mx.Observe("nip17", "ok", 120*time.Millisecond)
	mx.Observe("nip17", "ok", 3*time.Second)
	mx.Observe("nip04", "rate_limited", 0)
	mx.Observe("rpc", "failed", 40*time.Millisecond)
	mx.Observe("smoke-signals", "perhaps", time.Second)

	body := testenv.Scrape(t, "http://"+target+"/metrics")
	testenv.PromtoolCheck(t, body)
	for _, private := range []string{owner, sec.Pubkey(), nip.Npub(sec.Pubkey()), "name-aa01", "aa01", "web", "api.example.com"} {
		if strings.Contains(string(body), private) {
			t.Errorf("the metrics show %q", private)
		}
	}
	if resp, err := http.Get("http://" + target + "/"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET / on the metrics port: %v %v, want 404", resp, err)
	}

	prom := testenv.Prometheus(t, target)
	for _, w := range []struct {
		expr string
		want float64
	}{
		{`up{job="enclaved"}`, 1},
		{`enclaved_build_info{version="v-test"}`, 1},
		{`enclaved_containers{state="running"}`, 1},
		{`enclaved_containers{state="stopped"}`, 1},
		{`enclaved_containers{state="quoted"}`, 1},
		{`enclaved_containers{state="paused"}`, 0},
		{`enclaved_units_capacity`, 8},
		{`enclaved_units_used`, 3},
		{`enclaved_units_free`, 5},
		{`enclaved_quotes_waiting`, 1},
		{`enclaved_invoices_open{purpose="deploy"}`, 1},
		{`enclaved_invoices_open{purpose="topup"}`, 1},
		{`enclaved_credited_msat_total`, 5_001_000},
		{`enclaved_debited_msat_total`, 2000},
		{`enclaved_unclaimed_msat_total`, 0},
		{`enclaved_bot_requests_total{channel="nip17",outcome="ok"}`, 2},
		{`enclaved_bot_requests_total{channel="nip04",outcome="rate_limited"}`, 1},
		{`enclaved_bot_requests_total{channel="other",outcome="other"}`, 1},
		{`enclaved_bot_requests_total{channel="mention",outcome="ok"}`, 0},
		{`enclaved_bot_reply_duration_seconds_count{channel="nip17"}`, 2},
		{`enclaved_bot_reply_duration_seconds_bucket{channel="nip17",le="0.25"}`, 1},
		{`enclaved_backup_failures_total`, 1},
		{`enclaved_backup_duration_seconds_count`, 1},
		{`enclaved_backup_size_bytes`, float64(cp.Size)},
		{`count(enclaved_backup_age_seconds < 60)`, 1},
		{`enclaved_link_streams_opened_total{service="blob-put",opened_by="enclave"}`, 1},
		{`count(enclaved_link_streams_opened_total{service="ingress",opened_by="parent"} > 0)`, 1},
		{`sum(enclaved_container_egress_refused_total)`, 1},
	} {
		prom.Await(t, 30*time.Second, w.expr, w.want)
	}

	// A zap settles between scrapes: the next scrape reads it.
	invoice("aa01", "h5", "zap", 21_000)
	settle("h5", 21_000)
	prom.Await(t, 30*time.Second, `enclaved_credited_msat_total`, 5_022_000)
	prom.Await(t, 30*time.Second, `enclaved_invoices_open{purpose="zap"}`, 0)
}
