package billing

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/enclaved/enclaved/money"
)

// AuditLimits are the operator's settings an audit checks against.
type AuditLimits struct {
	// Now is the moment audited (the database's clock).
	Now time.Time
	// Interval is how long a running container may stay at zero before
	// metering pauses it (one metering interval).
	Interval time.Duration
	// Retention bounds how long a paused, stopped or exited container
	// holds its units unpaid.
	Retention time.Duration
	// Capacity is the instance's units.
	Capacity int64
}

// Check is one audited invariant: passed, or the first offenders.
type Check struct {
	Name     string
	Failures []string // at most maxFailures, then a count
}

// OK says whether the check passed.
func (c Check) OK() bool { return len(c.Failures) == 0 }

// Report is an audit's outcome.
type Report struct {
	Checks []Check
	// Unclaimed are payments that settled after their container was
	// removed: the operator's to return.
	Unclaimed []Unclaimed
}

// OK says whether every check passed.
func (r Report) OK() bool {
	for _, c := range r.Checks {
		if !c.OK() {
			return false
		}
	}
	return true
}

const maxFailures = 10

// Audit recomputes every balance from the ledger and checks the money
// invariants of the instance's database, reading only. It reads the
// containers' states as the deployer writes them.
func Audit(ctx context.Context, db *sql.DB, lim AuditLimits) (Report, error) {
	var r Report
	nowMs := lim.Now.UnixMilli()
	checks := []struct {
		name  string
		query string
		args  []any
	}{
		{"every balance is its credits minus its debits, exactly",
			`SELECT c.name || ': balance ' || c.balance_msat || ' msat, ledger ' ||
				(COALESCE(SUM(CASE WHEN l.kind = 'credit' THEN l.amount_msat END), 0) - COALESCE(SUM(CASE WHEN l.kind = 'debit' THEN l.amount_msat END), 0))
			FROM containers c LEFT JOIN ledger l ON l.container_id = c.id GROUP BY c.id
			HAVING c.balance_msat != COALESCE(SUM(CASE WHEN l.kind = 'credit' THEN l.amount_msat END), 0) - COALESCE(SUM(CASE WHEN l.kind = 'debit' THEN l.amount_msat END), 0)
				OR c.charged_msat != COALESCE(SUM(CASE WHEN l.kind = 'debit' THEN l.amount_msat END), 0)`, nil},
		{"every settled payment is credited exactly once (or recorded unclaimed)",
			`SELECT i.purpose || ' invoice ' || i.payment_hash || ': ' || (SELECT COUNT(*) FROM ledger l WHERE l.payment_hash = i.payment_hash) ||
				' credits, ' || (SELECT COUNT(*) FROM unclaimed u WHERE u.payment_hash = i.payment_hash) || ' unclaimed'
			FROM invoices i WHERE i.settled_at IS NOT NULL AND
				(SELECT COUNT(*) FROM ledger l WHERE l.payment_hash = i.payment_hash) + (SELECT COUNT(*) FROM unclaimed u WHERE u.payment_hash = i.payment_hash) != 1`, nil},
		{"every credit is a settled invoice of its container, at least its amount",
			`SELECT 'credit ' || l.payment_hash || ' to ' || l.container_id || ' of ' || l.amount_msat || ' msat'
			FROM ledger l LEFT JOIN invoices i ON i.payment_hash = l.payment_hash
			WHERE l.kind = 'credit' AND (i.payment_hash IS NULL OR i.settled_at IS NULL OR i.container_id != l.container_id OR l.amount_msat < i.amount_msat)`, nil},
		{"no container runs, or holds units, without its quote paid in full",
			`SELECT c.name || ' is ' || c.state || ' with ' || COALESCE((SELECT SUM(amount_msat) FROM ledger l WHERE l.container_id = c.id AND l.kind = 'credit'), 0) ||
				' msat credited of a ' || (SELECT MAX(amount_msat) FROM invoices i WHERE i.container_id = c.id AND i.purpose = 'deploy') || ' msat quote'
			FROM containers c WHERE c.state IN ('paid', 'starting', 'running', 'paused', 'stopped', 'exited')
				AND COALESCE((SELECT SUM(amount_msat) FROM ledger l WHERE l.container_id = c.id AND l.kind = 'credit'), 0)
					< COALESCE((SELECT MAX(amount_msat) FROM invoices i WHERE i.container_id = c.id AND i.purpose = 'deploy'), 0)`, nil},
		{"no container runs at zero balance past one metering interval",
			`SELECT c.name || ' runs with ' || c.balance_msat || ' msat since ' || c.running_since
			FROM containers c WHERE c.state = 'running' AND c.balance_msat <= 0 AND c.running_since IS NOT NULL AND c.running_since < ?`,
			[]any{nowMs - lim.Interval.Milliseconds()}},
		{"only running containers are metered",
			`SELECT c.name || ' is ' || c.state || ' but metered since ' || c.running_since
			FROM containers c WHERE c.state != 'running' AND c.running_since IS NOT NULL`, nil},
		{"units are held only while paid, or for the retention window",
			`SELECT c.name || ' is ' || c.state || COALESCE(' since ' || c.paused_at, ' with no time') FROM containers c
			WHERE c.state IN ('paused', 'stopped', 'exited') AND (c.paused_at IS NULL OR c.paused_at + ? < ?)`,
			[]any{lim.Retention.Milliseconds() + lim.Interval.Milliseconds(), nowMs}},
		{"no debit overlaps another of its container",
			`SELECT a.container_id || ': debits ' || a.id || ' and ' || b.id FROM ledger a JOIN ledger b
			ON a.container_id = b.container_id AND a.kind = 'debit' AND b.kind = 'debit' AND a.id < b.id
			AND a.from_ms < b.to_ms AND b.from_ms < a.to_ms`, nil},
	}
	for _, c := range checks {
		fails, err := offenders(ctx, db, c.query, c.args...)
		if err != nil {
			return r, fmt.Errorf("audit %q: %w", c.name, err)
		}
		r.Checks = append(r.Checks, Check{Name: c.name, Failures: fails})
	}
	// The arithmetic of each container's debits against its running time.
	rows, err := db.QueryContext(ctx, `SELECT name, units, price_msat, run_ms, charged_msat, balance_msat FROM containers`)
	if err != nil {
		return r, err
	}
	exact := Check{Name: "every container's debits are its running time × its rate, rounded down"}
	for rows.Next() {
		var name string
		var units, price, runMs, charged, balance int64
		if err := rows.Scan(&name, &units, &price, &runMs, &charged, &balance); err != nil {
			rows.Close()
			return r, err
		}
		due := money.ChargeFor(money.Rate(units, price), runMs)
		if due != charged && !(balance == 0 && due >= charged) {
			exact.Failures = appendCapped(exact.Failures, fmt.Sprintf("%s: %d ms at %d msat/h is %d msat, charged %d", name, runMs, money.Rate(units, price), due, charged))
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return r, err
	}
	r.Checks = append(r.Checks, exact)
	var used int64
	if err := db.QueryRowContext(ctx, `SELECT COALESCE(SUM(units), 0) FROM containers
		WHERE state IN ('running', 'starting', 'paused', 'stopped', 'exited')`).Scan(&used); err != nil {
		return r, err
	}
	capacity := Check{Name: "the units held fit the capacity"}
	if lim.Capacity > 0 && used > lim.Capacity {
		capacity.Failures = []string{fmt.Sprintf("%d units held of %d", used, lim.Capacity)}
	}
	r.Checks = append(r.Checks, capacity)
	r.Unclaimed, err = listUnclaimed(ctx, db)
	return r, err
}

func offenders(ctx context.Context, db *sql.DB, query string, args ...any) ([]string, error) {
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s sql.NullString
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = appendCapped(out, s.String)
	}
	return out, rows.Err()
}

// appendCapped keeps the first maxFailures offenders, then counts.
func appendCapped(list []string, s string) []string {
	switch {
	case len(list) < maxFailures:
		return append(list, s)
	case len(list) == maxFailures:
		return append(list, "and more")
	}
	return list
}
