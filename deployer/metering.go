package deployer

import (
	"context"
	"time"

	"github.com/enclaved/enclaved/records"
)

// Metering charges a running container when it is due, not at every pass:
// when its balance runs out (it is paused), when its owner is due a
// low-balance warning, and at least every chargeEvery otherwise (so the
// ledger and the stored balance stay recent). A pass costs what is due, not
// what runs: records.DueForMetering selects it, and at most
// chargesPerPass periodic charges are taken per pass (the others are
// merely later; what is owed accrues exactly either way). Between charges,
// a balance is shown as it stands (records.Record.BalanceAt).
const (
	chargeEvery    = time.Hour
	chargesPerPass = 200
)

// Tick meters the running containers that are due: it pauses those whose
// balance ran out, tells owners once when little time is left, and removes
// paused containers whose retention window has passed. It returns when the
// next tick is due: within a minute, or sooner if a balance runs out (or a
// warning is due) sooner.
func (d *Deployer) Tick(ctx context.Context) (time.Time, error) {
	now := d.now()
	next := now.Add(time.Minute)
	// Unpaid quotes whose invoice expired free their name.
	if err := d.Records.ExpireQuotes(ctx, now); err != nil {
		return next, err
	}
	ids, err := d.Records.DueForMetering(ctx, now, d.cfg.LowBalance, now.Add(-chargeEvery), chargesPerPass)
	if err != nil {
		return next, err
	}
	meters, failed := d.ledger.ChargeAll(ctx, ids, now)
	for id, err := range failed {
		d.log.Error("metering failed", "container", id, "err", err)
	}
	for _, m := range meters {
		id := m.ContainerID
		switch {
		case m.Exhausted:
			if err := d.Pause(ctx, id, "balance exhausted"); err != nil {
				d.log.Error("pause failed", "container", id, "err", err)
				continue
			}
			rec, _ := d.Records.Get(ctx, id)
			d.emit(ctx, Paused{Of{rec}, now.Add(d.cfg.Retention)})
		case m.Left <= d.lowBalance(m.RunMs, m.Left) && !m.LowNotified:
			d.Records.MarkLowNotified(ctx, id)
			rec, _ := d.Records.Get(ctx, id)
			d.emit(ctx, LowBalance{Of{rec}, m.Left})
		}
	}
	if due, err := d.Records.NextDue(ctx, d.cfg.LowBalance); err != nil {
		return next, err
	} else if !due.IsZero() && due.Before(next) {
		// Whatever was due is charged by now; one still due (its charge
		// failed) is tried again in a second, not in a spin.
		next = due
		if !next.After(now) {
			next = now.Add(time.Second)
		}
	}
	d.pruneQuotes(ctx, now)
	// The instance was up, so every running container ran, until now:
	// after an outage, none is charged past this moment (Reconcile).
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
func (d *Deployer) lowBalance(runMs int64, left time.Duration) time.Duration {
	paid := time.Duration(runMs)*time.Millisecond + left
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
