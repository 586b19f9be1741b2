package deployer

import (
	"context"
	"fmt"
	"time"
)

// Tick meters every running container up to now: it pauses those whose
// balance ran out, tells owners once when little time is left, and removes
// paused containers whose retention window has passed. It returns when the
// next tick is due: within a minute, or sooner if a balance runs out sooner.
func (d *Deployer) Tick(ctx context.Context) (time.Time, error) {
	now := d.now()
	next := now.Add(time.Minute)
	// Unpaid quotes whose invoice expired free their name.
	if _, err := d.db.ExecContext(ctx, `UPDATE containers SET state = 'expired', state_reason = 'quote expired unpaid', updated_at = ?
		WHERE state = 'quoted' AND NOT EXISTS (SELECT 1 FROM invoices i WHERE i.container_id = containers.id AND i.expires_at > ?)`,
		now.UnixMilli(), now.Unix()); err != nil {
		return next, err
	}
	ids, err := d.idsIn(ctx, StateRunning)
	if err != nil {
		return next, err
	}
	for _, id := range ids {
		m, err := d.ledger.Charge(ctx, id, now)
		if err != nil {
			d.log.Error("metering failed", "container", id, "err", err)
			continue
		}
		rec, _ := d.Get(ctx, id)
		switch {
		case m.Exhausted:
			if err := d.Pause(ctx, id, "balance exhausted"); err != nil {
				d.log.Error("pause failed", "container", id, "err", err)
				continue
			}
			d.notify(ctx, Notice{id, rec.Owner, rec.Channel, fmt.Sprintf("%s is paused: its balance is used up. Its data is kept until %s; send `topup %s <sats>` or zap it to resume.",
				rec.Name, now.Add(d.cfg.Retention).UTC().Format(time.RFC3339), rec.Name)})
		case m.Left < d.lowBalance(rec, m.Left) && !m.LowNotified:
			d.ledger.MarkLowNotified(ctx, id)
			d.notify(ctx, Notice{id, rec.Owner, rec.Channel, fmt.Sprintf("%s has %d sats left, about %s of running time. Send `topup %s <sats>` to keep it running.",
				rec.Name, m.BalanceMsat/1000, Human(m.Left), rec.Name)})
		}
		if !m.Exhausted && now.Add(m.Left).Before(next) {
			next = now.Add(m.Left)
		}
	}
	d.pruneQuotes(ctx, now)
	// Every running container is charged up to now: after an outage,
	// none is charged past this moment (Reconcile).
	if err := d.ledger.Beat(ctx, now); err != nil {
		return next, err
	}
	// Paused and stopped containers hold their units and data for the
	// retention window, unpaid; then they are removed.
	halted, err := d.ids(ctx, `state IN (?, ?, ?)`, StatePaused, StateStopped, StateExited)
	if err != nil {
		return next, err
	}
	for _, id := range halted {
		rec, err := d.Get(ctx, id)
		if err != nil {
			continue
		}
		until := rec.PausedAt.Add(d.cfg.Retention)
		if !now.Before(until) {
			if err := d.Remove(ctx, id, "retention window passed"); err != nil {
				d.log.Error("remove failed", "container", id, "err", err)
				continue
			}
			d.notify(ctx, Notice{id, rec.Owner, rec.Channel, fmt.Sprintf("%s was removed: it stayed %s past the retention window (%s).",
				rec.Name, rec.State, Human(d.cfg.Retention))})
		} else if until.Before(next) {
			next = until
		}
	}
	// Paid containers that waited for capacity start when some is free.
	waiting, err := d.idsIn(ctx, StatePaid)
	if err != nil {
		return next, err
	}
	for _, id := range waiting {
		if err := d.Launch(ctx, id); err != nil {
			d.log.Warn("launch failed", "container", id, "err", err)
		}
	}
	return next, nil
}

// lowBalance is when an owner is told that time runs short: the operator's
// setting, or a quarter of all the running time the container was paid
// for, whichever is less (a renter who paid for one hour is not warned at
// once, but at 15 minutes left).
func (d *Deployer) lowBalance(rec Record, left time.Duration) time.Duration {
	paid := time.Duration(rec.RunMs)*time.Millisecond + left
	return min(d.cfg.LowBalance, paid/4)
}

// Quotes that expired or were withdrawn unpaid are forgotten quoteGrace
// later (a payment racing the expiry has settled by then, or never will):
// their invoices are cancelled at the node and deleted, their rows too,
// and their names are free again. At most prunePerTick go per tick.
const (
	quoteGrace   = time.Hour
	prunePerTick = 500
)

func (d *Deployer) pruneQuotes(ctx context.Context, now time.Time) {
	ids, err := d.ids(ctx, `state = 'expired' AND updated_at < ?
		AND NOT EXISTS (SELECT 1 FROM ledger l WHERE l.container_id = containers.id)
		AND NOT EXISTS (SELECT 1 FROM unclaimed u WHERE u.container_id = containers.id)`,
		now.Add(-quoteGrace).UnixMilli())
	if err != nil {
		d.log.Warn("listing expired quotes", "err", err)
		return
	}
	ids = ids[:min(len(ids), prunePerTick)]
	for _, id := range ids {
		if d.cfg.Invoices != nil {
			if err := d.cfg.Invoices.Forget(ctx, id); err != nil {
				d.log.Warn("forgetting an expired quote", "container", id, "err", err)
				continue
			}
		}
		unlock := d.locks.lock(id)
		_, err := d.db.ExecContext(ctx, `DELETE FROM containers WHERE id = ? AND state = 'expired'
			AND NOT EXISTS (SELECT 1 FROM invoices i WHERE i.container_id = containers.id)`, id)
		unlock()
		if err != nil {
			d.log.Warn("deleting an expired quote", "container", id, "err", err)
		}
	}
}
