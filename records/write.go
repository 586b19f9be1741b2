package records

import (
	"context"
	"database/sql"
	"encoding/json"
	"strings"
	"time"
)

// Execer runs statements: a *sql.Tx, to change a record within a larger
// transaction, or the database itself (*store.DB) for a change on its own.
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Transition sets container id's state and its reason, after extra
// (optional) made its own changes in the same transaction.
func (s *Store) Transition(ctx context.Context, id, state, reason string, extra func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if extra != nil {
		if err := extra(tx); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE containers SET state = ?, state_reason = ?, updated_at = ? WHERE id = ?`,
		state, reason, s.now().UnixMilli(), id); err != nil {
		return err
	}
	return tx.Commit()
}

// Update runs fn in one transaction.
func (s *Store) Update(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// SetRuntimeID records the runtime's id of container id's container.
func SetRuntimeID(ctx context.Context, x Execer, id, dockerID string) error {
	_, err := x.ExecContext(ctx, `UPDATE containers SET docker_id = ? WHERE id = ?`, dockerID, id)
	return err
}

// MarkRunning records that container id runs as runtime container
// dockerID: no longer halted, and its owner may be told again when its
// balance runs low.
func MarkRunning(ctx context.Context, x Execer, id, dockerID string) error {
	_, err := x.ExecContext(ctx, `UPDATE containers SET docker_id = ?, paused_at = NULL, low_notified = 0 WHERE id = ?`, dockerID, id)
	return err
}

// MarkHalted records when container id stopped running (paused, stopped
// or exited): its retention window counts from at.
func MarkHalted(ctx context.Context, x Execer, id string, at time.Time) error {
	_, err := x.ExecContext(ctx, `UPDATE containers SET paused_at = ? WHERE id = ?`, at.UnixMilli(), id)
	return err
}

// RecordCommand records that an owner's command sent at at was carried
// out on container id (never moving back).
func (s *Store) RecordCommand(ctx context.Context, id string, at time.Time) error {
	_, err := s.db.ExecContext(ctx, `UPDATE containers SET command_at = MAX(command_at, ?) WHERE id = ?`, at.Unix(), id)
	return err
}

// Account is a container's money as stored: its price, balance and meter.
type Account struct {
	Units, PriceMsat, BalanceMsat int64
	RunMs, ChargedMsat            int64
	RunningSince                  sql.NullInt64 // unix ms; null unless metered
	LowNotified                   bool
	// PaidUntil (unix ms; null unless metered) is when the balance runs
	// out, PaidMs all the running time the credits pay for: billing
	// keeps them with every change, so a metering pass finds what is due
	// (DueForMetering) without reading every container.
	PaidUntil sql.NullInt64
	PaidMs    int64
}

// GetAccount reads container id's account.
func GetAccount(ctx context.Context, x Execer, id string) (Account, error) {
	var a Account
	err := x.QueryRowContext(ctx, `SELECT units, price_msat, balance_msat, run_ms, charged_msat, running_since, low_notified, paid_until, paid_ms
		FROM containers WHERE id = ?`, id).Scan(&a.Units, &a.PriceMsat, &a.BalanceMsat, &a.RunMs, &a.ChargedMsat, &a.RunningSince, &a.LowNotified,
		&a.PaidUntil, &a.PaidMs)
	return a, err
}

// SetMeter stores container id's balance, meter and schedule after a
// charge at nowMs (unix ms).
func SetMeter(ctx context.Context, x Execer, id string, a Account, nowMs int64) error {
	_, err := x.ExecContext(ctx, `UPDATE containers SET balance_msat = ?, run_ms = ?, charged_msat = ?, running_since = ?, updated_at = ?,
		paid_until = ?, paid_ms = ? WHERE id = ?`, a.BalanceMsat, a.RunMs, a.ChargedMsat, a.RunningSince, nowMs, a.PaidUntil, a.PaidMs, id)
	return err
}

// SetSchedule stores when container id's balance runs out and all the
// running time its credits pay for (after a credit or a start).
func SetSchedule(ctx context.Context, x Execer, id string, a Account) error {
	_, err := x.ExecContext(ctx, `UPDATE containers SET paid_until = ?, paid_ms = ? WHERE id = ?`, a.PaidUntil, a.PaidMs, id)
	return err
}

// StartMeter meters container id from at on, unless it is metered already.
func StartMeter(ctx context.Context, x Execer, id string, at time.Time) error {
	_, err := x.ExecContext(ctx, `UPDATE containers SET running_since = ? WHERE id = ? AND running_since IS NULL`, at.UnixMilli(), id)
	return err
}

// Credit adds amountMsat to container id's balance at at and returns the
// new balance. A quote (or an expired one) whose balance reaches its
// quoted total becomes paid in the same statement, so a crash before its
// launch leaves a record the next start launches. The quoted total is its
// deploy invoice's amount: a quote never starts for less, whatever other
// payments reach it.
func Credit(ctx context.Context, x Execer, id string, amountMsat int64, at time.Time) (int64, error) {
	var balance int64
	err := x.QueryRowContext(ctx, `UPDATE containers SET balance_msat = balance_msat + ?, low_notified = 0, updated_at = ?,
		state = CASE WHEN state IN ('quoted', 'expired') AND balance_msat + ? >= (SELECT COALESCE(MAX(amount_msat), 0) FROM invoices
			WHERE invoices.container_id = containers.id AND purpose = 'deploy') THEN 'paid' ELSE state END
		WHERE id = ? RETURNING balance_msat`, amountMsat, at.UnixMilli(), amountMsat, id).Scan(&balance)
	return balance, err
}

// MarkLowNotified records that the owner was told the balance is low.
func (s *Store) MarkLowNotified(ctx context.Context, id string) error {
	_, err := s.db.ExecContext(ctx, `UPDATE containers SET low_notified = 1 WHERE id = ?`, id)
	return err
}

// DueForMetering lists the metered containers a metering pass at now
// charges: every one whose balance ran out (or that was never
// scheduled), every one whose owner is due a low-balance warning (less
// than min(low, a quarter of all its paid time) left, not yet warned), and
// at most limit of those last charged before chargedBefore, longest
// uncharged first.
func (s *Store) DueForMetering(ctx context.Context, now time.Time, low time.Duration, chargedBefore time.Time, limit int) ([]string, error) {
	nowMs, lowMs := now.UnixMilli(), low.Milliseconds()
	// Each part walks an index of the metered (+state: not the state
	// index, which would read every running container): a warning is due
	// at most low before the balance runs out, so only those within low of
	// it are candidates.
	return s.db.Strings(ctx, `SELECT id FROM containers WHERE running_since IS NOT NULL AND paid_until IS NULL AND +state = 'running'
		UNION
		SELECT id FROM containers WHERE running_since IS NOT NULL AND paid_until <= ? AND +state = 'running'
			AND (paid_until <= ? OR (low_notified = 0 AND paid_until - MIN(?, paid_ms / 4) <= ?))
		UNION
		SELECT id FROM (SELECT id FROM containers WHERE running_since IS NOT NULL AND running_since <= ? AND +state = 'running'
			ORDER BY running_since LIMIT ?)`,
		nowMs+lowMs, nowMs, lowMs, nowMs, chargedBefore.UnixMilli(), limit)
}

// NextDue is the earliest moment a metered container's balance runs out
// or its owner is due a low-balance warning (low as in DueForMetering);
// zero if none is metered.
func (s *Store) NextDue(ctx context.Context, low time.Duration) (time.Time, error) {
	var first, at sql.NullInt64
	if err := s.db.QueryRowContext(ctx, `SELECT MIN(paid_until) FROM containers WHERE running_since IS NOT NULL AND +state = 'running'`).Scan(&first); err != nil || !first.Valid {
		return time.Time{}, err
	}
	// A warning comes at most low before a balance runs out.
	err := s.db.QueryRowContext(ctx, `SELECT MIN(CASE WHEN low_notified = 0 THEN paid_until - MIN(?, paid_ms / 4) ELSE paid_until END)
		FROM containers WHERE running_since IS NOT NULL AND paid_until <= ? AND +state = 'running'`,
		low.Milliseconds(), first.Int64+low.Milliseconds()).Scan(&at)
	if err != nil || !at.Valid {
		return time.Time{}, err
	}
	return time.UnixMilli(at.Int64), nil
}

// ExpireQuotes marks quotes whose invoices all expired by now expired:
// their names are free again.
func (s *Store) ExpireQuotes(ctx context.Context, now time.Time) error {
	_, err := s.db.ExecContext(ctx, `UPDATE containers SET state = 'expired', state_reason = 'quote expired unpaid', updated_at = ?
		WHERE state = 'quoted' AND NOT EXISTS (SELECT 1 FROM invoices i WHERE i.container_id = containers.id AND i.expires_at > ?)`,
		now.UnixMilli(), now.Unix())
	return err
}

// ForgettableQuotes lists (at most limit) quotes that expired or were
// withdrawn before before and were never paid (no ledger row, no
// unclaimed payment).
func (s *Store) ForgettableQuotes(ctx context.Context, before time.Time, limit int) ([]string, error) {
	return s.db.Strings(ctx, `SELECT id FROM containers WHERE state = 'expired' AND updated_at < ?
		AND NOT EXISTS (SELECT 1 FROM ledger l WHERE l.container_id = containers.id)
		AND NOT EXISTS (SELECT 1 FROM unclaimed u WHERE u.container_id = containers.id)
		ORDER BY id LIMIT ?`, before.UnixMilli(), limit)
}

// DeleteQuote deletes an expired quote whose invoices are gone.
func (s *Store) DeleteQuote(ctx context.Context, id string) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM containers WHERE id = ? AND state = 'expired'
		AND NOT EXISTS (SELECT 1 FROM invoices i WHERE i.container_id = containers.id)`, id)
	return err
}

// NewQuote is a quoted container, as recorded before its invoice is
// issued.
type NewQuote struct {
	ID, Name, Owner, Channel, Image, ImageRef string
	ImageSize                                 int64
	HasVolumes                                bool
	Units, PriceMsat                          int64
	Env                                       [][2]string
	Pubkey                                    string
	Egress                                    []string
	HTTPPort                                  int
	// AdminPublic: the owner agreed (admin=yes) to be named as the
	// container's admin in its public status events.
	AdminPublic bool
}

// QuoteCaps bound the quotes waiting for payment: those created after
// Since count, at most All instance-wide and PerOwner per owner (0: no
// cap).
type QuoteCaps struct {
	Since         time.Time
	All, PerOwner int64
}

// InsertQuote records q unless its name is taken or a cap is reached,
// both checked in the insert itself so concurrent quotes cannot overshoot;
// ok is false if it was not recorded (Waiting says why).
func (s *Store) InsertQuote(ctx context.Context, q NewQuote, caps QuoteCaps) (ok bool, err error) {
	env, _ := json.Marshal(q.Env)
	egress, _ := json.Marshal(q.Egress)
	if q.Env == nil {
		env = []byte("[]")
	}
	if q.Egress == nil {
		egress = []byte("[]")
	}
	now, open := s.now().UnixMilli(), caps.Since.UnixMilli()
	res, err := s.db.ExecContext(ctx, `INSERT INTO containers (id, name, owner, channel, image, image_ref, image_size, image_volumes,
		units, price_msat, env, pubkey, state, created_at, updated_at, egress, http_port, admin_public)
		SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'quoted', ?, ?, ?, ?, ?
		WHERE NOT EXISTS (SELECT 1 FROM containers WHERE name = ?)
		AND (? = 0 OR (SELECT COUNT(*) FROM containers WHERE state = 'quoted' AND created_at > ?) < ?)
		AND (? = 0 OR (SELECT COUNT(*) FROM containers WHERE state = 'quoted' AND created_at > ? AND owner = ?) < ?)`,
		q.ID, q.Name, q.Owner, q.Channel, q.Image, q.ImageRef, q.ImageSize, q.HasVolumes, q.Units, q.PriceMsat, string(env),
		q.Pubkey, now, now, string(egress), q.HTTPPort, q.AdminPublic, q.Name,
		caps.All, open, caps.All, caps.PerOwner, open, q.Owner, caps.PerOwner)
	if err != nil {
		if strings.Contains(err.Error(), "UNIQUE") {
			return false, nil
		}
		return false, err
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// Waiting is the quotes waiting for payment created after a moment: the
// owner's and all, and when the oldest of each was created (zero: none).
type Waiting struct {
	Mine, All        int64
	MyOldest, Oldest time.Time
	NameTaken        bool
}

// QuotesWaiting counts the quotes waiting for payment created after
// since, and whether name (if not "") is taken.
func (s *Store) QuotesWaiting(ctx context.Context, owner, name string, since time.Time) (Waiting, error) {
	var w Waiting
	var myOldest, oldest sql.NullInt64
	if name != "" {
		if err := s.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM containers WHERE name = ?)`, name).Scan(&w.NameTaken); err != nil {
			return w, err
		}
	}
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(CASE WHEN owner = ? THEN 1 END), COUNT(*), MIN(CASE WHEN owner = ? THEN created_at END), MIN(created_at)
		FROM containers WHERE state = 'quoted' AND created_at > ?`, owner, owner, since.UnixMilli()).Scan(&w.Mine, &w.All, &myOldest, &oldest); err != nil {
		return w, err
	}
	if myOldest.Valid {
		w.MyOldest = time.UnixMilli(myOldest.Int64)
	}
	if oldest.Valid {
		w.Oldest = time.UnixMilli(oldest.Int64)
	}
	return w, nil
}
