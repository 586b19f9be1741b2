package deployer

import (
	"context"
	"fmt"
	"time"

	"github.com/enclaved/enclaved/records"
)

// Owners' lifecycle commands.
const (
	CommandStop   = "stop"
	CommandStart  = "start"
	CommandDelete = "delete"
)

// StaleError refuses an owner's command older than one already carried
// out on the same container: a command that waited on a relay (or was
// replayed after a restart) never undoes a newer one.
type StaleError struct {
	Name string
	Last time.Time // when the newer command was sent
}

func (e *StaleError) Error() string {
	return fmt.Sprintf("that command was sent before the last one carried out on %s (%s), so it was not: send it again if you still want it",
		e.Name, e.Last.UTC().Format("2006-01-02 15:04:05 UTC"))
}

// OwnerCommand carries out an owner's stop, start or delete of container
// id, sent at at (the command's created_at, to the second), and returns the
// record before and after. Commands on one container are carried out in
// the order they were sent: one older than a command already carried out
// (or answered as a no-op) is refused with a StaleError.
func (d *Deployer) OwnerCommand(ctx context.Context, id, verb string, at time.Time) (before, after records.Record, err error) {
	defer d.locks.lock(id)()
	before, err = d.Records.Get(ctx, id)
	if err != nil {
		return before, before, err
	}
	if at.Unix() < before.CommandAt.Unix() {
		return before, before, &StaleError{Name: before.Name, Last: before.CommandAt}
	}
	switch verb {
	case CommandStop:
		err = d.haltLocked(ctx, id, records.StateStopped, "stopped by owner")
	case CommandStart:
		err = d.startLocked(ctx, before)
	case CommandDelete:
		err = d.deleteLocked(ctx, before)
	default:
		err = fmt.Errorf("unknown owner command %q", verb)
	}
	if err != nil {
		return before, before, err
	}
	if err := d.Records.RecordCommand(ctx, id, at); err != nil {
		return before, before, err
	}
	after, err = d.Records.Get(ctx, id)
	return before, after, err
}

// startLocked is Start with the container's lock held.
func (d *Deployer) startLocked(ctx context.Context, rec records.Record) error {
	switch rec.State {
	case records.StateStopped, records.StatePaused, records.StateExited:
		return d.resume(ctx, rec.ID)
	case records.StatePaid, records.StateFailed:
		if rec.BalanceMsat <= 0 {
			return &records.UserError{Msg: rec.Name + " is not paid"}
		}
		return d.launch(ctx, rec.ID)
	case records.StateRunning, records.StateStarting:
		return nil
	default:
		return &records.UserError{Msg: fmt.Sprintf("%s is %s and cannot be started", rec.Name, rec.State)}
	}
}

// deleteLocked is Delete with the container's lock held.
func (d *Deployer) deleteLocked(ctx context.Context, rec records.Record) error {
	if rec.State == records.StateQuoted {
		if err := d.Records.Transition(ctx, rec.ID, records.StateExpired, "withdrawn by owner", nil); err != nil {
			return err
		}
		d.cancelOpen(ctx, rec.ID)
		return nil
	}
	return d.remove(ctx, rec.ID, "deleted by owner")
}
