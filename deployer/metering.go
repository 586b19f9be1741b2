package deployer

import (
	"context"
	"time"

	"github.com/enclaved/enclaved/records"
)

// Tick meters every running container up to now: it pauses those whose
// balance ran out, tells owners once when little time is left, and removes
// paused containers whose retention window has passed. It returns when the
// next tick is due: within a minute, or sooner if a balance runs out sooner.
func (d *Deployer) Tick(ctx context.Context) (time.Time, error) {
	now := d.now()
	next := now.Add(time.Minute)
	// Unpaid quotes whose invoice expired free their name.
	if err := d.Records.ExpireQuotes(ctx, now); err != nil {
		return next, err
	}
	ids, err := d.Records.InState(ctx, records.StateRunning)
	if err != nil {
		return next, err
	}
	for _, id := range ids {
		m, err := d.ledger.Charge(ctx, id, now)
		if err != nil {
			d.log.Error("metering failed", "container", id, "err", err)
			continue
		}
		rec, _ := d.Records.Get(ctx, id)
		switch {
		case m.Exhausted:
			if err := d.Pause(ctx, id, "balance exhausted"); err != nil {
				d.log.Error("pause failed", "container", id, "err", err)
				continue
			}
			rec, _ = d.Records.Get(ctx, id)
			d.emit(ctx, Paused{Of{rec}, now.Add(d.cfg.Retention)})
		case m.Left < d.lowBalance(rec, m.Left) && !m.LowNotified:
			d.Records.MarkLowNotified(ctx, id)
			d.emit(ctx, LowBalance{Of{rec}, m.Left})
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
	halted, err := d.Records.InState(ctx, records.StatePaused, records.StateStopped, records.StateExited)
	if err != nil {
		return next, err
	}
	for _, id := range halted {
		rec, err := d.Records.Get(ctx, id)
		if err != nil {
			continue
		}
		until := rec.PausedAt.Add(d.cfg.Retention)
		if !now.Before(until) {
			if err := d.Remove(ctx, id, "retention window passed"); err != nil {
				d.log.Error("remove failed", "container", id, "err", err)
				continue
			}
			d.emit(ctx, Expired{Of{rec}, rec.State, d.cfg.Retention})
		} else if until.Before(next) {
			next = until
		}
	}
	// Paid containers that waited for capacity start when some is free.
	waiting, err := d.Records.InState(ctx, records.StatePaid)
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
func (d *Deployer) lowBalance(rec records.Record, left time.Duration) time.Duration {
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
	ids, err := d.Records.ForgettableQuotes(ctx, now.Add(-quoteGrace), prunePerTick)
	if err != nil {
		d.log.Warn("listing expired quotes", "err", err)
		return
	}
	for _, id := range ids {
		if d.cfg.Invoices != nil {
			if err := d.cfg.Invoices.Forget(ctx, id); err != nil {
				d.log.Warn("forgetting an expired quote", "container", id, "err", err)
				continue
			}
		}
		unlock := d.locks.lock(id)
		err := d.Records.DeleteQuote(ctx, id)
		unlock()
		if err != nil {
			d.log.Warn("deleting an expired quote", "container", id, "err", err)
		}
	}
}
