package lnd_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/lightningnetwork/lnd/lnrpc"

	"github.com/enclaved/enclaved/billing"
	"github.com/enclaved/enclaved/internal/testenv"
	"github.com/enclaved/enclaved/records"
	"github.com/enclaved/enclaved/store"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// dropping ends the stream after every settlement, as a flaky parent would.
type dropping struct{ billing.Lightning }

var errDropped = errors.New("dropped")

func (d dropping) SubscribeSettlements(ctx context.Context, after string, fn func(billing.Settlement) error) error {
	err := d.Lightning.SubscribeSettlements(ctx, after, func(s billing.Settlement) error {
		if err := fn(s); err != nil {
			return err
		}
		return errDropped
	})
	return err
}

// quotedDB opens a fresh instance database holding one quoted container.
func quotedDB(t *testing.T, ctx context.Context, id string) *store.DB {
	t.Helper()
	db, err := store.Open(ctx, filepath.Join(t.TempDir(), "enclaved.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ok, err := records.New(db, time.Now).InsertQuote(ctx, records.NewQuote{ID: id, Name: "web", Owner: "owner", Channel: "nip17",
		Image: "img", ImageRef: "img@sha256:00", ImageSize: 1, Units: 1, PriceMsat: 1000}, records.QuoteCaps{})
	if err != nil || !ok {
		t.Fatalf("quote %s: %v (recorded: %v)", id, err, ok)
	}
	return db
}

// recorded issues an invoice of msat for container id at the node and
// records it in db, as billing.Invoices would.
func recorded(t *testing.T, ctx context.Context, client billing.Lightning, db *store.DB, id, purpose, memo string, msat int64) billing.Invoice {
	t.Helper()
	inv, err := client.AddInvoice(ctx, msat, memo, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	invoices := &billing.Invoices{DB: db, Now: time.Now}
	if err := invoices.Record(ctx, billing.Request{ContainerID: id, Purpose: purpose, AmountMsat: msat}, inv); err != nil {
		t.Fatal(err)
	}
	return inv
}

func TestSettlementsCreditedOnceAcrossDropsAndRestarts(t *testing.T) {
	ln := testenv.Lightning(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db := quotedDB(t, ctx, "a")
	ledger := billing.NewLedger(db)
	client := testenv.InvoiceClient(t, ln.Operator)

	invoice := func(msat int64) billing.Invoice {
		t.Helper()
		return recorded(t, ctx, client, db, "a", "deploy", "enclaved quote a", msat)
	}
	credits := make(chan billing.Credit, 10)
	watch := func() (stop func()) {
		wctx, wcancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			billing.WatchSettlements(wctx, dropping{client}, ledger, slog.New(slog.NewTextHandler(io.Discard, nil)),
				func(c billing.Credit) { credits <- c })
		}()
		return func() { wcancel(); <-done }
	}
	expectCredit := func(hash string, msat int64) {
		t.Helper()
		select {
		case c := <-credits:
			if c.AmountMsat != msat || c.ContainerID != "a" {
				t.Fatalf("credit %+v, want %d msat for a", c, msat)
			}
		case <-ctx.Done():
			t.Fatalf("no credit for %s", hash)
		}
	}

	first := invoice(50_000)
	dec, err := ln.Payer.Client.DecodePayReq(ctx, &lnrpc.PayReqString{PayReq: first.Bolt11})
	if err != nil {
		t.Fatal(err)
	}
	if dec.Expiry != 600 || dec.Description != "enclaved quote a" || dec.NumMsat != 50_000 {
		t.Errorf("invoice says expiry %d, memo %q, %d msat", dec.Expiry, dec.Description, dec.NumMsat)
	}

	stop := watch()
	if _, err := ln.Payer.Pay(ctx, first.Bolt11); err != nil {
		t.Fatal(err)
	}
	expectCredit(first.PaymentHash, 50_000)
	second := invoice(7_000)
	if _, err := ln.Payer.Pay(ctx, second.Bolt11); err != nil {
		t.Fatal(err)
	}
	expectCredit(second.PaymentHash, 7_000)
	stop()

	// Paid while the instance is down: the restarted watcher finds it.
	third := invoice(1_000)
	if _, err := ln.Payer.Pay(ctx, third.Bolt11); err != nil {
		t.Fatal(err)
	}
	stop = watch()
	expectCredit(third.PaymentHash, 1_000)
	// One more live payment proves the stream is live and nothing old was replayed.
	fourth := invoice(2_000)
	if _, err := ln.Payer.Pay(ctx, fourth.Bolt11); err != nil {
		t.Fatal(err)
	}
	expectCredit(fourth.PaymentHash, 2_000)
	stop()
	select {
	case c := <-credits:
		t.Fatalf("extra credit %+v", c)
	default:
	}
	credited, debited, _ := ledger.Sums(ctx, "a")
	var balance int64
	db.QueryRow(`SELECT balance_msat FROM containers WHERE id = 'a'`).Scan(&balance)
	if credited != 60_000 || debited != 0 || balance != 60_000 {
		t.Errorf("ledger credits %d, balance %d, want 60000", credited, balance)
	}
}

// An instance whose first payment settled while it was down (no cursor
// yet: settle index 0, for which LND's stream sends no backlog) credits it
// when it starts watching.
func TestFirstSettlementWhileDown(t *testing.T) {
	ln := testenv.Lightning(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db := quotedDB(t, ctx, "b")
	client := testenv.InvoiceClient(t, ln.Operator)
	inv := recorded(t, ctx, client, db, "b", "deploy", "enclaved quote b", 3_000)
	if _, err := ln.Payer.Pay(ctx, inv.Bolt11); err != nil {
		t.Fatal(err)
	}
	credits := make(chan billing.Credit, 1)
	wctx, wcancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		billing.WatchSettlements(wctx, client, billing.NewLedger(db), slog.New(slog.NewTextHandler(io.Discard, nil)),
			func(c billing.Credit) { credits <- c })
	}()
	defer func() { wcancel(); <-done }()
	select {
	case c := <-credits:
		if c.PaymentHash != inv.PaymentHash || c.AmountMsat != 3_000 {
			t.Errorf("credit %+v, want 3000 msat for %s", c, inv.PaymentHash)
		}
	case <-ctx.Done():
		t.Fatal("the payment settled before the first watch was never credited")
	}
}

// crashing ends the instance (its context) right after the first of its
// own invoices is credited, as a SIGKILL part way through would.
type crashing struct {
	billing.Lightning
	ours   map[string]bool
	cancel func()
}

var errCrashed = errors.New("crashed")

func (c crashing) SubscribeSettlements(ctx context.Context, after string, fn func(billing.Settlement) error) error {
	return c.Lightning.SubscribeSettlements(ctx, after, func(s billing.Settlement) error {
		if err := fn(s); err != nil {
			return err
		}
		if c.ours[s.PaymentHash] {
			c.cancel()
			return errCrashed
		}
		return nil
	})
}

// An instance starting without a cursor lists what settled before; if
// it stops part way, the next start still credits every payment: the list
// is applied in the order the invoices settled, which is not the order they
// were added.
func TestSettledListCrashResumesInSettleOrder(t *testing.T) {
	ln := testenv.Lightning(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db := quotedDB(t, ctx, "c")
	ledger := billing.NewLedger(db)
	client := testenv.InvoiceClient(t, ln.Operator)
	var added []billing.Invoice
	for _, msat := range []int64{1_000, 2_000, 4_000} {
		added = append(added, recorded(t, ctx, client, db, "c", "topup", "enclaved topup c", msat))
	}
	ours := map[string]bool{}
	for _, i := range []int{2, 0, 1} { // settled in another order than added
		if _, err := ln.Payer.Pay(ctx, added[i].Bolt11); err != nil {
			t.Fatal(err)
		}
		ours[added[i].PaymentHash] = true
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	cctx, crash := context.WithCancel(ctx)
	billing.WatchSettlements(cctx, crashing{client, ours, crash}, ledger, log, nil)
	if credited, _, _ := ledger.Sums(ctx, "c"); credited == 0 || credited == 7_000 {
		t.Fatalf("before the crash: %d msat credited, want one of the three payments", credited)
	}

	credits := make(chan billing.Credit, 3)
	wctx, wcancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		billing.WatchSettlements(wctx, client, ledger, log, func(c billing.Credit) { credits <- c })
	}()
	defer func() { wcancel(); <-done }()
	deadline := time.After(30 * time.Second) // a bound: the backlog comes at once
	for range 2 {
		select {
		case <-credits:
		case <-deadline:
			credited, _, _ := ledger.Sums(ctx, "c")
			t.Fatalf("after the restart: %d of 7000 msat credited; a payment was skipped", credited)
		}
	}
	if credited, _, _ := ledger.Sums(ctx, "c"); credited != 7_000 {
		t.Errorf("credited %d msat, want 7000", credited)
	}
}

// recording notes where each subscription resumes and every settlement it
// delivers.
type recording struct {
	billing.Lightning
	mu        sync.Mutex
	after     []string
	delivered []string // payment hashes
}

func (r *recording) SubscribeSettlements(ctx context.Context, after string, fn func(billing.Settlement) error) error {
	r.mu.Lock()
	r.after = append(r.after, after)
	r.mu.Unlock()
	return r.Lightning.SubscribeSettlements(ctx, after, func(s billing.Settlement) error {
		r.mu.Lock()
		r.delivered = append(r.delivered, s.PaymentHash)
		r.mu.Unlock()
		return fn(s)
	})
}

// A database written before the cursor kept LND's settle index under
// lnd_settle_index (so do backups of it): restored, the instance resumes
// the stream where it was, neither listing everything again nor missing
// what was paid meanwhile.
func TestResumesFromTheSettleIndexOfBefore(t *testing.T) {
	ln := testenv.Lightning(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db := quotedDB(t, ctx, "d")
	ledger := billing.NewLedger(db)
	client := testenv.InvoiceClient(t, ln.Operator)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	credits := make(chan billing.Credit, 4)
	watch := func(ln billing.Lightning) (stop func()) {
		wctx, wcancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			billing.WatchSettlements(wctx, ln, ledger, log, func(c billing.Credit) { credits <- c })
		}()
		return func() { wcancel(); <-done }
	}
	expectCredit := func(inv billing.Invoice) {
		t.Helper()
		select {
		case c := <-credits:
			if c.PaymentHash != inv.PaymentHash {
				t.Fatalf("credit %+v, want %s", c, inv.PaymentHash)
			}
		case <-ctx.Done():
			t.Fatalf("no credit for %s", inv.PaymentHash)
		}
	}

	first := recorded(t, ctx, client, db, "d", "deploy", "enclaved quote d", 1_000)
	stop := watch(client)
	if _, err := ln.Payer.Pay(ctx, first.Bolt11); err != nil {
		t.Fatal(err)
	}
	expectCredit(first)
	stop()
	// The database as an instance of before left it.
	cursor, err := ledger.Cursor(ctx)
	if err != nil || cursor == "" {
		t.Fatalf("cursor %q %v after a settlement", cursor, err)
	}
	if _, err := db.Exec(`DELETE FROM meta WHERE key = 'lightning_cursor'`); err != nil {
		t.Fatal(err)
	}
	if err := db.SetMeta(ctx, "lnd_settle_index", cursor); err != nil {
		t.Fatal(err)
	}

	second := recorded(t, ctx, client, db, "d", "topup", "enclaved topup d", 2_000)
	if _, err := ln.Payer.Pay(ctx, second.Bolt11); err != nil {
		t.Fatal(err)
	}
	rec := &recording{Lightning: client}
	stop = watch(rec)
	expectCredit(second)
	stop()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.after) == 0 || rec.after[0] != cursor {
		t.Errorf("resumed after %q, want %q (the settle index of before)", rec.after, cursor)
	}
	if slices.Contains(rec.delivered, first.PaymentHash) {
		t.Errorf("the payment settled before was streamed again: %q", rec.delivered)
	}
	if now, _ := ledger.Cursor(ctx); now == cursor {
		t.Errorf("cursor still %q after a new settlement", now)
	}
	if credited, _, _ := ledger.Sums(ctx, "d"); credited != 3_000 {
		t.Errorf("credited %d msat, want 3000", credited)
	}
}
