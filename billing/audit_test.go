package billing

import (
	"context"
	"strings"
	"testing"
	"time"
)

// The audit passes a ledger kept by the ledger's own operations, and names
// each invariant a tampered database breaks.
func TestAuditFindsWhatIsWrong(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	l := NewLedger(db)
	addContainer(t, db, "a", 1, 3_600_000, "pay-a")
	if _, err := l.ApplySettlement(ctx, Settlement{PaymentHash: "pay-a", AmountMsat: 5_000, Cursor: "1", SettledAt: t0}); err != nil {
		t.Fatal(err)
	}
	db.Exec(`UPDATE containers SET state = 'running' WHERE id = 'a'`)
	startRunning(t, db, "a", t0)
	if _, err := l.Charge(ctx, "a", t0.Add(1500*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	lim := AuditLimits{Now: t0.Add(2 * time.Second), Interval: time.Minute, Retention: 72 * time.Hour, Capacity: 4}
	rep, err := Audit(ctx, db.DB, lim)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Fatalf("a sound ledger fails: %+v", rep.Checks)
	}

	for _, tc := range []struct {
		tamper, check string
	}{
		{`UPDATE containers SET balance_msat = balance_msat + 1 WHERE id = 'a'`, "every balance is its credits minus its debits"},
		{`UPDATE containers SET charged_msat = charged_msat + 1, balance_msat = balance_msat WHERE id = 'a'`, "every balance is its credits minus its debits"},
		{`INSERT INTO invoices (payment_hash, container_id, purpose, amount_msat, bolt11, expires_at, created_at, settled_at) VALUES ('lost', 'a', 'topup', 1000, 'lnbc', 0, 0, 1)`, "every settled payment is credited exactly once"},
		{`UPDATE invoices SET amount_msat = 9000 WHERE payment_hash = 'pay-a'`, "without its quote paid in full"},
		{`UPDATE containers SET state = 'stopped', running_since = NULL, paused_at = 0 WHERE id = 'a'`, "units are held only while paid, or for the retention window"},
		{`UPDATE containers SET units = 5 WHERE id = 'a'`, "the units held fit the capacity"},
		{`UPDATE containers SET run_ms = run_ms + 60000 WHERE id = 'a'`, "debits are its running time"},
	} {
		if _, err := db.Exec(tc.tamper); err != nil {
			t.Fatal(err)
		}
		rep, err := Audit(ctx, db.DB, lim)
		if err != nil {
			t.Fatal(err)
		}
		failed := ""
		for _, c := range rep.Checks {
			if !c.OK() {
				failed += c.Name + "; "
			}
		}
		if !strings.Contains(failed, tc.check) {
			t.Errorf("after %q: failed %q, want %q", tc.tamper, failed, tc.check)
		}
		// Undo: a fresh sound state for the next case.
		db.Exec(`DELETE FROM invoices WHERE payment_hash = 'lost'`)
		db.Exec(`UPDATE invoices SET amount_msat = 1000 WHERE payment_hash = 'pay-a'`)
		db.Exec(`UPDATE containers SET state = 'running', paused_at = NULL, units = 1, running_since = ?, run_ms = 1500, charged_msat = 1500, balance_msat = 3500 WHERE id = 'a'`,
			t0.Add(1500*time.Millisecond).UnixMilli())
		if rep, _ := Audit(ctx, db.DB, lim); !rep.OK() {
			t.Fatalf("undoing %q: %+v", tc.tamper, rep.Checks)
		}
	}
}
