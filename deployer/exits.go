package deployer

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/enclaved/enclaved/billing"
	"github.com/enclaved/enclaved/records"
)

// Watch follows the runtime until ctx ends: a running container that stops
// on its own (exits, is OOM-killed, or is removed from the runtime) is
// charged up to the moment it stopped and no further, becomes exited, and
// its owner is told the exit code and its last lines of output. Exited
// containers are not restarted automatically: `start` runs them again.
// Whenever the runtime's event stream (re)starts, every running record is
// checked, so no exit goes unseen.
func (d *Deployer) Watch(ctx context.Context) error {
	backoff := time.Second
	for {
		since := time.Now()
		// The sweep sees what stopped before since; the stream replays
		// what stopped from since on.
		d.sweep(ctx)
		err := d.rt.Watch(ctx, since, func(rid string, labels map[string]string) {
			if labels[LabelInstance] == d.cfg.Instance && labels[LabelID] != "" {
				go d.checkExit(ctx, labels[LabelID])
			}
		})
		if ctx.Err() != nil {
			return ctx.Err()
		}
		d.log.Warn("runtime events ended; watching again", "err", err, "in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// sweep checks every running record against the runtime.
func (d *Deployer) sweep(ctx context.Context) {
	ids, err := d.Records.InState(ctx, records.StateRunning)
	if err != nil {
		d.log.Warn("checking running containers", "err", err)
		return
	}
	for _, id := range ids {
		d.checkExit(ctx, id)
	}
}

// exitTail is how many lines of an exited container's output its owner is
// sent, and at most how many characters.
const (
	exitTail      = 10
	exitTailChars = 1500
)

// checkExit looks at container id: if its record says running but the
// runtime has it stopped or gone, it exited on its own.
func (d *Deployer) checkExit(ctx context.Context, id string) {
	defer d.locks.lock(id)()
	rec, err := d.Records.Get(ctx, id)
	if err != nil || rec.State != records.StateRunning || rec.DockerID == "" {
		return // halted by the instance itself, or not ours to judge
	}
	st, err := d.rt.State(ctx, rec.DockerID)
	if err != nil {
		d.log.Warn("container state", "container", id, "err", err)
		return
	}
	if st.Running {
		return // a stale event: it runs again
	}
	d.exited(ctx, rec, st, d.now())
}

// exited records that rec stopped on its own (state st), charging it up to
// when it stopped (at most now).
func (d *Deployer) exited(ctx context.Context, rec records.Record, st State, now time.Time) {
	at := now
	if !st.Gone && !st.FinishedAt.IsZero() && st.FinishedAt.Before(now) {
		at = st.FinishedAt
	}
	var reason string
	switch {
	case st.Gone:
		reason = "removed from the container engine"
	case st.OOMKilled:
		reason = fmt.Sprintf("killed for running out of memory (%d MiB for %d unit(s))", rec.Units*d.cfg.Unit.MemoryBytes>>20, rec.Units)
	default:
		reason = fmt.Sprintf("exited with code %d", st.ExitCode)
	}
	reason += " at " + at.UTC().Format("2006-01-02 15:04:05 UTC")
	// Charged up to when it stopped; its retention window counts from now,
	// when the instance learnt of it, on the instance's own clock.
	if err := d.Records.Transition(ctx, rec.ID, records.StateExited, reason, func(tx *sql.Tx) error {
		if _, err := billing.StopMetering(ctx, tx, rec.ID, at); err != nil {
			return err
		}
		return records.MarkHalted(ctx, tx, rec.ID, now)
	}); err != nil {
		d.log.Error("recording an exit", "container", rec.ID, "err", err)
		return
	}
	d.setIdle(rec.ID, true) // its volumes may have changed until it stopped
	d.log.Info("container exited", "container", rec.ID, "reason", reason)
	rec, _ = d.Records.Get(ctx, rec.ID)
	ev := Exited{Of: Of{rec}, Code: st.ExitCode, OOM: st.OOMKilled, Gone: st.Gone, At: at, RetainUntil: d.RetainUntil(rec)}
	if !st.Gone {
		if out, err := d.rt.Logs(ctx, rec.DockerID, exitTail); err == nil && strings.TrimSpace(out) != "" {
			if len(out) > exitTailChars {
				out = "…" + out[len(out)-exitTailChars:]
			}
			ev.Tail = strings.TrimRight(out, "\n")
		}
	}
	d.emit(ctx, ev)
}
