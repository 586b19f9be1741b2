package deployer

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nbd-wtf/go-nostr/nip19"

	"github.com/enclaved/enclaved/billing"
)

// Find returns the container named target, or whose npub (or hex pubkey)
// is target. Removed and expired records are found too; callers decide.
func (d *Deployer) Find(ctx context.Context, target string) (Record, error) {
	col, val := "name", target
	if strings.HasPrefix(target, "npub1") {
		prefix, v, err := nip19.Decode(target)
		if err != nil || prefix != "npub" {
			return Record{}, &UserError{fmt.Sprintf("%s is not a valid npub", clip(target, 20))}
		}
		col, val = "pubkey", v.(string)
	} else if len(target) == 64 {
		col = "pubkey"
	}
	var id string
	err := d.db.QueryRowContext(ctx, `SELECT id FROM containers WHERE `+col+` = ?`, val).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && val == "") {
		return Record{}, ErrNotFound
	}
	if err != nil {
		return Record{}, err
	}
	return d.Get(ctx, id)
}

// Owned returns the owner's containers that are not gone (neither removed
// nor expired), oldest first.
func (d *Deployer) Owned(ctx context.Context, owner string) ([]Record, error) {
	return d.records(ctx, `SELECT id FROM containers WHERE owner = ? AND state NOT IN ('removed', 'expired')
		ORDER BY created_at, id LIMIT 100`, owner)
}

// Live returns every paid container that is not removed.
func (d *Deployer) Live(ctx context.Context) ([]Record, error) {
	return d.records(ctx, `SELECT id FROM containers WHERE state NOT IN ('removed', 'expired', 'quoted') ORDER BY created_at, id`)
}

func (d *Deployer) records(ctx context.Context, query string, args ...any) ([]Record, error) {
	rows, err := d.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, err
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	recs := make([]Record, 0, len(ids))
	for _, id := range ids {
		r, err := d.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		recs = append(recs, r)
	}
	return recs, nil
}

// Logs returns the last lines of a container's output.
func (d *Deployer) Logs(ctx context.Context, id string, lines int) (string, error) {
	rec, err := d.Get(ctx, id)
	if err != nil {
		return "", err
	}
	if rec.DockerID == "" || rec.State == StateRemoved {
		return "", &UserError{fmt.Sprintf("%s has no logs: it is %s", rec.Name, rec.State)}
	}
	// Bounded: some engines leave a log read hanging while the container
	// restarts.
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return d.rt.Logs(ctx, rec.DockerID, lines)
}

// Topup issues an invoice that credits the container with sats when paid;
// requester (hex pubkey) is who asked for it.
func (q *Quoter) Topup(ctx context.Context, rec Record, sats int64, requester string) (billing.Invoice, error) {
	switch rec.State {
	case StateRemoved, StateExpired:
		return billing.Invoice{}, &UserError{fmt.Sprintf("%s is %s; it cannot be topped up", rec.Name, rec.State)}
	case StateQuoted:
		// A quote starts only once its own invoice is paid: top-ups never
		// add up to a launch for less than the quote.
		return billing.Invoice{}, &UserError{fmt.Sprintf("%s is not paid yet: pay its quote's invoice first; a topup adds running time to a container that was paid for", rec.Name)}
	}
	if q.Pricing.OpenTopups > 0 {
		now := q.D.now()
		var open int64
		var first sql.NullInt64
		if err := q.D.db.QueryRowContext(ctx, `SELECT COUNT(*), MIN(expires_at) FROM invoices WHERE container_id = ? AND purpose = 'topup'
			AND settled_at IS NULL AND cancelled_at IS NULL AND expires_at > ?`, rec.ID, now.Unix()).Scan(&open, &first); err != nil {
			return billing.Invoice{}, err
		}
		if open >= q.Pricing.OpenTopups {
			return billing.Invoice{}, busyError(fmt.Sprintf("%s has %d top-up invoices waiting to be paid (at most %d); pay one of those", rec.Name, open, q.Pricing.OpenTopups),
				time.Unix(first.Int64, 0).Sub(now))
		}
	}
	return q.Invoices.Issue(ctx, billing.Request{ContainerID: rec.ID, Purpose: "topup", AmountMsat: sats * 1000,
		Memo: fmt.Sprintf("enclaved topup %s: %s, %d sats", rec.ID, rec.Name, sats), Expiry: q.Pricing.QuoteExpiry, Requester: requester})
}

// Human formats a duration for people: "3 days 4 h", "2 h 5 min", "40 min",
// "30 s".
func Human(d time.Duration) string {
	if d < time.Minute {
		return fmt.Sprintf("%d s", int64(max(d, 0)/time.Second))
	}
	d = d.Round(time.Minute)
	days, h, m := int64(d/(24*time.Hour)), int64(d%(24*time.Hour)/time.Hour), int64(d%time.Hour/time.Minute)
	var parts []string
	if days == 1 {
		parts = append(parts, "1 day")
	} else if days > 1 {
		parts = append(parts, fmt.Sprintf("%d days", days))
	}
	if h > 0 {
		parts = append(parts, fmt.Sprintf("%d h", h))
	}
	if m > 0 && days == 0 {
		parts = append(parts, fmt.Sprintf("%d min", m))
	}
	if len(parts) == 0 {
		return "0 min"
	}
	return strings.Join(parts, " ")
}
