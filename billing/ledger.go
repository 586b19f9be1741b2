// Package billing is the instance's money: prices and quotes, invoices, the
// ledger (integer millisatoshis; every credit keyed by payment hash and
// applied once, every debit a row), settlement from the Lightning node, and
// metering of running time.
//
// It runs inside the enclave. It declares the Lightning interface it needs;
// billing/lnd implements it with LND's gRPC API. Where the settlement
// stream resumes is the backend's opaque cursor, which the ledger stores
// with each settlement and never compares: a cursor moving back costs only
// a replay, and moving it past an unapplied settlement is prevented by the
// one watcher applying settlements in the backend's order (cursor.go).
package billing

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/enclaved/enclaved/money"
	"github.com/enclaved/enclaved/records"
	"github.com/enclaved/enclaved/store"
)

// Settlement is a paid invoice as the Lightning node reports it.
type Settlement struct {
	PaymentHash string // hex
	AmountMsat  int64  // what was paid (may exceed the invoice)
	Cursor      string // the backend's, opaque: resume after this settlement
	SettledAt   time.Time
	Preimage    string // hex; public once paid (zap receipts carry it)
}

// Credit is the outcome of applying a settlement.
type Credit struct {
	ContainerID string
	PaymentHash string
	Purpose     string // deploy, topup, zap
	AmountMsat  int64
	BalanceMsat int64 // after the credit
	// Applied is false when this payment hash was credited before (a
	// replayed settlement) or the invoice is not ours.
	Applied bool
	// Unclaimed: the container was removed before the payment settled;
	// nothing was credited and the payment is recorded as unclaimed.
	Unclaimed bool
	// Requester is who asked for the invoice (hex pubkey), if known.
	Requester string
}

// Ledger applies credits and debits to container balances, always together
// with a ledger row, in one transaction.
type Ledger struct {
	db *store.DB
}

// NewLedger returns a ledger over db.
func NewLedger(db *store.DB) *Ledger { return &Ledger{db: db} }

// ApplySettlement credits the container whose invoice was paid, exactly once
// per payment hash, and stores its cursor in the same transaction (a
// settlement without one leaves the cursor alone). A settlement of an
// invoice we did not issue only stores the cursor. A late settlement (after
// the quote expired) still credits: money is never dropped. The cursor is
// overwritten, not compared: only WatchSettlements passes one (cursor.go).
func (l *Ledger) ApplySettlement(ctx context.Context, s Settlement) (Credit, error) {
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return Credit{}, err
	}
	defer tx.Rollback()
	c, err := applySettlement(ctx, tx, s)
	if err != nil {
		return Credit{}, err
	}
	if err := setCursor(ctx, tx, s.Cursor); err != nil {
		return Credit{}, err
	}
	return c, tx.Commit()
}

func applySettlement(ctx context.Context, tx *sql.Tx, s Settlement) (Credit, error) {
	var c Credit
	var state string
	err := tx.QueryRowContext(ctx, `SELECT i.container_id, i.purpose, i.requester, c.state FROM invoices i
		JOIN containers c ON c.id = i.container_id WHERE i.payment_hash = ?`, s.PaymentHash).
		Scan(&c.ContainerID, &c.Purpose, &c.Requester, &state)
	if errors.Is(err, sql.ErrNoRows) {
		return Credit{}, nil // not ours
	}
	if err != nil {
		return Credit{}, fmt.Errorf("settlement %s: %w", s.PaymentHash, err)
	}
	if s.AmountMsat <= 0 {
		return c, fmt.Errorf("settlement %s: amount %d msat", s.PaymentHash, s.AmountMsat)
	}
	if state == "removed" {
		// Too late: the container is gone. Nothing is credited; the
		// payment is recorded, once, for the operator to see.
		applied, err := settleOnce(ctx, tx, s, `INSERT INTO unclaimed (payment_hash, container_id, amount_msat, requester, at)
			VALUES (?, ?, ?, ?, ?) ON CONFLICT (payment_hash) DO NOTHING`,
			s.PaymentHash, c.ContainerID, s.AmountMsat, c.Requester, s.SettledAt.UnixMilli())
		if err != nil || !applied {
			return c, err
		}
		c.AmountMsat, c.PaymentHash, c.Applied, c.Unclaimed = s.AmountMsat, s.PaymentHash, true, true
		return c, nil
	}
	applied, err := settleOnce(ctx, tx, s, `INSERT INTO ledger (container_id, kind, amount_msat, payment_hash, at)
		VALUES (?, 'credit', ?, ?, ?) ON CONFLICT (payment_hash) DO NOTHING`,
		c.ContainerID, s.AmountMsat, s.PaymentHash, s.SettledAt.UnixMilli())
	if err != nil || !applied {
		return c, err
	}
	// A quote whose total is paid becomes paid in the same transaction
	// (records.Credit).
	if c.BalanceMsat, err = records.Credit(ctx, tx, c.ContainerID, s.AmountMsat, s.SettledAt); err != nil {
		return c, err
	}
	if err := reschedule(ctx, tx, c.ContainerID); err != nil {
		return c, err
	}
	c.AmountMsat, c.PaymentHash, c.Applied = s.AmountMsat, s.PaymentHash, true
	return c, nil
}

// settleOnce inserts the row that applies settlement s (a ledger credit or
// an unclaimed record, both keyed by payment hash, so at most once) and
// marks its invoice settled; applied is false when s was applied before.
func settleOnce(ctx context.Context, tx *sql.Tx, s Settlement, insert string, args ...any) (applied bool, err error) {
	res, err := tx.ExecContext(ctx, insert, args...)
	if err != nil {
		return false, fmt.Errorf("settlement %s: %w", s.PaymentHash, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return false, nil // replayed
	}
	_, err = tx.ExecContext(ctx, `UPDATE invoices SET settled_at = ?, preimage = ? WHERE payment_hash = ?`,
		s.SettledAt.Unix(), s.Preimage, s.PaymentHash)
	return err == nil, err
}

// Meter is the metered state of one running container after a charge.
type Meter struct {
	ContainerID string
	BalanceMsat int64
	// Exhausted is true when the balance reached zero: the caller pauses it.
	Exhausted bool
	// Left is the running time the balance still pays for.
	Left time.Duration
	// LowNotified says whether the owner was already told the balance is low.
	LowNotified bool
	// RunMs is all the running time charged so far.
	RunMs int64
}

// Charge debits a running container for its running time up to now, as one
// ledger row, and keeps it running (running_since moves to now). Charges are
// exact: the sum of debits is always floor(rate * total running ms / 1 h),
// so frequent charging loses nothing to rounding. It never takes more than
// the balance; a container at zero is reported Exhausted.
func (l *Ledger) Charge(ctx context.Context, containerID string, now time.Time) (Meter, error) {
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return Meter{}, err
	}
	defer tx.Rollback()
	m, err := charge(ctx, tx, containerID, now.UnixMilli(), true)
	if err != nil {
		return Meter{}, err
	}
	return m, tx.Commit()
}

// ChargeAll charges each of the containers ids as Charge does, all in one
// transaction (a metering pass). If that fails, each is charged in a
// transaction of its own, so one bad record never stops the others' meter;
// failed reports those that could not be charged.
func (l *Ledger) ChargeAll(ctx context.Context, ids []string, now time.Time) (meters []Meter, failed map[string]error) {
	if len(ids) == 0 {
		return nil, nil
	}
	tx, err := l.db.BeginTx(ctx, nil)
	if err == nil {
		defer tx.Rollback()
		for _, id := range ids {
			var m Meter
			if m, err = charge(ctx, tx, id, now.UnixMilli(), true); err != nil {
				break
			}
			meters = append(meters, m)
		}
		if err == nil {
			if err = tx.Commit(); err == nil {
				return meters, nil
			}
		}
	}
	meters, failed = meters[:0], map[string]error{}
	for _, id := range ids {
		m, err := l.Charge(ctx, id, now)
		if err != nil {
			failed[id] = err
			continue
		}
		meters = append(meters, m)
	}
	return meters, failed
}

// StartMetering marks a container running from now on.
func StartMetering(ctx context.Context, tx *sql.Tx, containerID string, now time.Time) error {
	if err := records.StartMeter(ctx, tx, containerID, now); err != nil {
		return err
	}
	return reschedule(ctx, tx, containerID)
}

// StopMetering charges a container up to now and stops its meter; every
// state change out of running goes through it, in the state change's
// transaction.
func StopMetering(ctx context.Context, tx *sql.Tx, containerID string, now time.Time) (Meter, error) {
	return charge(ctx, tx, containerID, now.UnixMilli(), false)
}

func charge(ctx context.Context, tx *sql.Tx, id string, nowMs int64, keepRunning bool) (Meter, error) {
	a, err := records.GetAccount(ctx, tx, id)
	if err != nil {
		return Meter{}, fmt.Errorf("meter %s: %w", id, err)
	}
	rate := money.Rate(a.Units, a.PriceMsat)
	m := Meter{ContainerID: id, BalanceMsat: a.BalanceMsat, LowNotified: a.LowNotified}
	since := a.RunningSince
	if since.Valid && nowMs > since.Int64 {
		newRun := a.RunMs + (nowMs - since.Int64)
		due := money.ChargeFor(rate, newRun) - a.ChargedMsat
		if due > a.BalanceMsat {
			// The balance ran out part way: charge what is left, and meter
			// only the time it paid for.
			due = a.BalanceMsat
			newRun = money.RunMsFor(rate, a.ChargedMsat+due)
		}
		if due > 0 {
			if _, err := tx.ExecContext(ctx, `INSERT INTO ledger (container_id, kind, amount_msat, from_ms, to_ms, at)
				VALUES (?, 'debit', ?, ?, ?, ?)`, id, due, since.Int64, nowMs, nowMs); err != nil {
				return Meter{}, err
			}
		}
		a.BalanceMsat -= due
		a.ChargedMsat += due
		a.RunMs = newRun
		m.BalanceMsat = a.BalanceMsat
	}
	// running_since after this charge. Never back: a charge computed with
	// an earlier now (two metering passes at once) must not make the next
	// one bill time again.
	a.RunningSince = sql.NullInt64{}
	if keepRunning && since.Valid {
		a.RunningSince = sql.NullInt64{Int64: max(nowMs, since.Int64), Valid: true}
	}
	schedule(&a)
	if err := records.SetMeter(ctx, tx, id, a, nowMs); err != nil {
		return Meter{}, err
	}
	m.Exhausted = a.BalanceMsat == 0 && rate > 0
	m.Left = money.TimeLeft(rate, a.BalanceMsat, a.ChargedMsat, a.RunMs)
	m.RunMs = a.RunMs
	return m, nil
}

// maxSchedule bounds paid_until and paid_ms: a free container (rate 0) or
// a balance beyond any running time is paid "forever", never due.
const maxSchedule = 1 << 62

// schedule sets a's PaidUntil (when a metered container's balance runs
// out) and PaidMs (all the running time its credits pay for), which
// metering passes select what is due by (records.DueForMetering).
func schedule(a *records.Account) {
	rate := money.Rate(a.Units, a.PriceMsat)
	a.PaidMs = min(money.RunMsFor(rate, a.ChargedMsat+a.BalanceMsat), maxSchedule)
	a.PaidUntil = sql.NullInt64{}
	if a.RunningSince.Valid {
		a.PaidUntil = sql.NullInt64{Int64: min(a.RunningSince.Int64+max(a.PaidMs-a.RunMs, 0), maxSchedule), Valid: true}
	}
}

// reschedule recomputes container id's schedule after its balance or
// meter changed outside a charge (a credit, a start).
func reschedule(ctx context.Context, tx *sql.Tx, id string) error {
	a, err := records.GetAccount(ctx, tx, id)
	if err != nil {
		return err
	}
	schedule(&a)
	return records.SetSchedule(ctx, tx, id, a)
}

const beatKey = "metered_at"

// Beat records that metering ran at now: the instance was up then. After
// an outage, containers are charged up to the last beat and no further
// (RestartMetering), so the gap is never billed.
func (l *Ledger) Beat(ctx context.Context, now time.Time) error {
	return l.db.SetMeta(ctx, beatKey, strconv.FormatInt(now.UnixMilli(), 10))
}

// LastBeat is the last time metering ran; zero if it never did.
func (l *Ledger) LastBeat(ctx context.Context) (time.Time, error) {
	v, err := l.db.Meta(ctx, beatKey)
	if errors.Is(err, store.ErrNotFound) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, err
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s: %w", beatKey, err)
	}
	return time.UnixMilli(ms), nil
}

// RestartMetering is metering across an outage of the instance: the
// container is charged up to upTo (the last beat, or when it stopped if
// that was earlier) and not for the gap after it; if again is set, it is
// metered from now on.
func RestartMetering(ctx context.Context, tx *sql.Tx, containerID string, upTo, now time.Time, again bool) (Meter, error) {
	m, err := charge(ctx, tx, containerID, upTo.UnixMilli(), false)
	if err != nil || !again {
		return m, err
	}
	return m, StartMetering(ctx, tx, containerID, now)
}

// Totals are the instance's money so far, in msat: every credit and every
// debit in the ledger, and the payments left unclaimed (settled for a
// container already removed). Rows are never deleted, so each only grows.
type Totals struct {
	Credited, Debited, Unclaimed int64
}

// Totals sums the ledger and the unclaimed payments.
func (l *Ledger) Totals(ctx context.Context) (Totals, error) {
	var t Totals
	err := l.db.QueryRowContext(ctx, `SELECT
		COALESCE((SELECT SUM(amount_msat) FROM ledger WHERE kind = 'credit'), 0),
		COALESCE((SELECT SUM(amount_msat) FROM ledger WHERE kind = 'debit'), 0),
		COALESCE((SELECT SUM(amount_msat) FROM unclaimed), 0)`).Scan(&t.Credited, &t.Debited, &t.Unclaimed)
	return t, err
}

// Sums returns a container's credits and debits from the ledger, to check
// them against its balance.
func (l *Ledger) Sums(ctx context.Context, containerID string) (credits, debits int64, err error) {
	err = l.db.QueryRowContext(ctx, `SELECT
		COALESCE(SUM(CASE WHEN kind = 'credit' THEN amount_msat END), 0),
		COALESCE(SUM(CASE WHEN kind = 'debit' THEN amount_msat END), 0)
		FROM ledger WHERE container_id = ?`, containerID).Scan(&credits, &debits)
	return credits, debits, err
}
