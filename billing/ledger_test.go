package billing

import (
	"context"
	"fmt"
	"math/rand"
	"path/filepath"
	"testing"
	"time"

	"github.com/enclaved/enclaved/money"
	"github.com/enclaved/enclaved/records"
	"github.com/enclaved/enclaved/store"
)

var t0 = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

func openDB(t testing.TB) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "enclaved.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// addContainer inserts a container and an invoice for it, as a paid quote
// would leave them.
func addContainer(t testing.TB, db *store.DB, id string, units, price int64, hashes ...string) {
	t.Helper()
	ctx := context.Background()
	epoch := func() time.Time { return time.UnixMilli(0) }
	ok, err := records.New(db, epoch).InsertQuote(ctx, records.NewQuote{ID: id, Name: "c-" + id, Owner: "owner", Channel: "nip17",
		Image: "img", ImageRef: "img@sha256:00", ImageSize: 1, Units: units, PriceMsat: price}, records.QuoteCaps{})
	if err != nil || !ok {
		t.Fatalf("quote %s: %v (recorded: %v)", id, err, ok)
	}
	invoices := &Invoices{DB: db, Now: epoch}
	for _, h := range hashes {
		if err := invoices.Record(ctx, Request{ContainerID: id, Purpose: "deploy", AmountMsat: 1000},
			Invoice{PaymentHash: h, Bolt11: "lnbc", ExpiresAt: time.Unix(0, 0)}); err != nil {
			t.Fatal(err)
		}
	}
}

func startRunning(t testing.TB, db *store.DB, id string, at time.Time) {
	t.Helper()
	tx, _ := db.Begin()
	if err := StartMetering(context.Background(), tx, id, at); err != nil {
		t.Fatal(err)
	}
	tx.Commit()
}

func checkSums(t testing.TB, l *Ledger, db *store.DB, id string) {
	t.Helper()
	credits, debits, err := l.Sums(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	var balance, charged int64
	db.QueryRow(`SELECT balance_msat, charged_msat FROM containers WHERE id = ?`, id).Scan(&balance, &charged)
	if balance != credits-debits || charged != debits || balance < 0 {
		t.Fatalf("balance %d, charged %d; ledger credits %d debits %d", balance, charged, credits, debits)
	}
}

func TestSettlementCreditedExactlyOnce(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	l := NewLedger(db)
	addContainer(t, db, "a", 1, 1000, "h1", "h2")

	s := Settlement{PaymentHash: "h1", AmountMsat: 21_000, Cursor: "5", SettledAt: t0}
	c, err := l.ApplySettlement(ctx, s)
	if err != nil || !c.Applied || c.BalanceMsat != 21_000 || c.ContainerID != "a" || c.Purpose != "deploy" {
		t.Fatalf("first: %+v %v", c, err)
	}
	for i := 0; i < 3; i++ { // the stream replays it, after a reconnect or restart
		c, err = l.ApplySettlement(ctx, s)
		if err != nil || c.Applied {
			t.Fatalf("replay %d: %+v %v", i, c, err)
		}
	}
	c, _ = l.ApplySettlement(ctx, Settlement{PaymentHash: "h2", AmountMsat: 1, Cursor: "6", SettledAt: t0})
	if c.BalanceMsat != 21_001 {
		t.Errorf("second invoice: balance %d", c.BalanceMsat)
	}
	// Not our invoice: nothing credited, the cursor still moves on.
	c, err = l.ApplySettlement(ctx, Settlement{PaymentHash: "foreign", AmountMsat: 5, Cursor: "9", SettledAt: t0})
	if err != nil || c.Applied {
		t.Fatalf("foreign: %+v %v", c, err)
	}
	if cur, _ := l.Cursor(ctx); cur != "9" {
		t.Errorf("cursor %q, want 9", cur)
	}
	// An older cursor seen late is stored as it comes (the ledger cannot
	// compare cursors): resuming after it only replays what came after,
	// and nothing is credited twice.
	l.ApplySettlement(ctx, Settlement{PaymentHash: "h1", AmountMsat: 21_000, Cursor: "2", SettledAt: t0})
	if cur, _ := l.Cursor(ctx); cur != "2" {
		t.Errorf("cursor %q, want 2", cur)
	}
	for _, s := range []Settlement{s, {PaymentHash: "h2", AmountMsat: 1, Cursor: "6", SettledAt: t0},
		{PaymentHash: "foreign", AmountMsat: 5, Cursor: "9", SettledAt: t0}} {
		if c, err := l.ApplySettlement(ctx, s); err != nil || c.Applied {
			t.Fatalf("replay after the older cursor: %+v %v", c, err)
		}
	}
	if cur, _ := l.Cursor(ctx); cur != "9" {
		t.Errorf("cursor %q after the replay, want 9", cur)
	}
	// A settlement without a cursor (not from the watcher) leaves it alone.
	l.ApplySettlement(ctx, Settlement{PaymentHash: "h2", AmountMsat: 1, SettledAt: t0})
	if cur, _ := l.Cursor(ctx); cur != "9" {
		t.Errorf("cursor %q after a settlement without one, want 9", cur)
	}
	var balance int64
	db.QueryRow(`SELECT balance_msat FROM containers WHERE id = 'a'`).Scan(&balance)
	if balance != 21_001 {
		t.Errorf("balance %d after the replays, want 21001", balance)
	}
	checkSums(t, l, db, "a")
}

// Charging every few milliseconds or once gives the same exact total.
func TestChargesAreExactWhateverTheTickRate(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	l := NewLedger(db)
	// 3 units at 1001 msat per unit-hour: 3003 msat/h, not a divisor of 3.6e6.
	addContainer(t, db, "a", 3, 1001, "h")
	addContainer(t, db, "b", 3, 1001, "h2")
	for _, h := range []string{"h", "h2"} {
		l.ApplySettlement(ctx, Settlement{PaymentHash: h, AmountMsat: 1_000_000, SettledAt: t0})
	}
	startRunning(t, db, "a", t0)
	startRunning(t, db, "b", t0)
	rng := rand.New(rand.NewSource(1))
	now := t0
	end := t0.Add(2*time.Hour + 17*time.Second + 3*time.Millisecond)
	for now.Before(end) {
		now = now.Add(time.Duration(1+rng.Intn(90_000)) * time.Millisecond)
		if now.After(end) {
			now = end
		}
		if _, err := l.Charge(ctx, "a", now); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.Charge(ctx, "b", end); err != nil {
		t.Fatal(err)
	}
	want := money.ChargeFor(3003, end.Sub(t0).Milliseconds())
	for _, id := range []string{"a", "b"} {
		_, debits, _ := l.Sums(ctx, id)
		if debits != want {
			t.Errorf("%s charged %d msat, want %d", id, debits, want)
		}
		checkSums(t, l, db, id)
	}
}

func TestBalanceRunsOutExactly(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	l := NewLedger(db)
	addContainer(t, db, "a", 1, 1000, "h") // 1000 msat/h
	l.ApplySettlement(ctx, Settlement{PaymentHash: "h", AmountMsat: 500, SettledAt: t0})
	startRunning(t, db, "a", t0)

	m, _ := l.Charge(ctx, "a", t0.Add(10*time.Minute))
	if m.Exhausted || m.Left != 20*time.Minute {
		t.Errorf("after 10 min: %+v, want 20 min left", m)
	}
	m, err := l.Charge(ctx, "a", t0.Add(40*time.Minute)) // paid only for 30
	if err != nil {
		t.Fatal(err)
	}
	if !m.Exhausted || m.BalanceMsat != 0 || m.Left != 0 {
		t.Errorf("after 40 min: %+v, want exhausted", m)
	}
	var runMs int64
	db.QueryRow(`SELECT run_ms FROM containers WHERE id = 'a'`).Scan(&runMs)
	if runMs != (30 * time.Minute).Milliseconds() {
		t.Errorf("metered %d ms, want the 30 min that were paid for", runMs)
	}
	checkSums(t, l, db, "a")

	// Stopping charges nothing more and stops the meter.
	tx, _ := db.Begin()
	if _, err := StopMetering(ctx, tx, "a", t0.Add(50*time.Minute)); err != nil {
		t.Fatal(err)
	}
	tx.Commit()
	var since any
	db.QueryRow(`SELECT running_since FROM containers WHERE id = 'a'`).Scan(&since)
	if since != nil {
		t.Errorf("running_since %v after stop", since)
	}
	checkSums(t, l, db, "a")
}

// Random interleavings of credits, replays and charges keep
// balance = credits - debits >= 0.
func TestLedgerInvariantUnderRandomOperations(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	l := NewLedger(db)
	var hashes []string
	for i := 0; i < 20; i++ {
		hashes = append(hashes, fmt.Sprintf("h%d", i))
	}
	addContainer(t, db, "a", 2, 50_000, hashes...)
	startRunning(t, db, "a", t0)
	rng := rand.New(rand.NewSource(7))
	now := t0
	for i := 0; i < 300; i++ {
		switch rng.Intn(3) {
		case 0:
			h := hashes[rng.Intn(len(hashes))]
			if _, err := l.ApplySettlement(ctx, Settlement{PaymentHash: h, AmountMsat: int64(1 + rng.Intn(5000)), SettledAt: now}); err != nil {
				t.Fatal(err)
			}
		default:
			now = now.Add(time.Duration(rng.Intn(10_000)) * time.Millisecond)
			if _, err := l.Charge(ctx, "a", now); err != nil {
				t.Fatal(err)
			}
		}
		checkSums(t, l, db, "a")
	}
}

// A quote becomes paid only when its balance reaches the quoted total (its
// deploy invoice): smaller payments of other invoices credit it but never
// make it paid.
func TestQuotePaidOnlyAtItsTotal(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	l := NewLedger(db)
	addContainer(t, db, "q", 1, 1000, "deploy")
	invoices := &Invoices{DB: db, Now: func() time.Time { return t0 }}
	for _, h := range []string{"small1", "small2"} {
		if err := invoices.Record(ctx, Request{ContainerID: "q", Purpose: "topup", AmountMsat: 400},
			Invoice{PaymentHash: h, Bolt11: "lnbc", ExpiresAt: time.Unix(0, 0)}); err != nil {
			t.Fatal(err)
		}
	}
	state := func() string {
		var s string
		db.QueryRow(`SELECT state FROM containers WHERE id = 'q'`).Scan(&s)
		return s
	}
	for i, h := range []string{"small1", "small2"} {
		if _, err := l.ApplySettlement(ctx, Settlement{PaymentHash: h, AmountMsat: 400, Cursor: fmt.Sprint(i + 1), SettledAt: t0}); err != nil {
			t.Fatal(err)
		}
		if s := state(); s != "quoted" {
			t.Fatalf("after %d msat of a 1000 msat quote: %s", 400*(i+1), s)
		}
	}
	if _, err := l.ApplySettlement(ctx, Settlement{PaymentHash: "deploy", AmountMsat: 1000, Cursor: "3", SettledAt: t0}); err != nil {
		t.Fatal(err)
	}
	if s := state(); s != "paid" {
		t.Fatalf("after the quote's own invoice: %s", s)
	}
	checkSums(t, l, db, "q")
}

// Two metering passes at once, the one that read the clock earlier
// committing last, never bill a stretch twice: the meter never goes back.
func TestChargeOutOfOrderNeverBillsTwice(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	l := NewLedger(db)
	addContainer(t, db, "a", 1, 3_600_000, "pay")
	if _, err := l.ApplySettlement(ctx, Settlement{PaymentHash: "pay", AmountMsat: 10_000_000, Cursor: "1", SettledAt: t0}); err != nil {
		t.Fatal(err)
	}
	startRunning(t, db, "a", t0)
	if _, err := l.Charge(ctx, "a", t0.Add(time.Hour)); err != nil { // the later pass commits first
		t.Fatal(err)
	}
	if _, err := l.Charge(ctx, "a", t0.Add(time.Minute)); err != nil { // the earlier one after
		t.Fatal(err)
	}
	if _, err := l.Charge(ctx, "a", t0.Add(time.Hour+time.Minute)); err != nil {
		t.Fatal(err)
	}
	_, debits, _ := l.Sums(ctx, "a")
	if want := int64(61 * 60_000); debits != want {
		t.Errorf("debits %d msat for 61 min at 1 msat/ms, want %d", debits, want)
	}
	checkSums(t, l, db, "a")
}
