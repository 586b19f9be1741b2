package deployer

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/enclaved/enclaved/billing"
	"github.com/enclaved/enclaved/internal/crashpoint"
	"github.com/enclaved/enclaved/money"
	"github.com/enclaved/enclaved/records"
)

// OnCredit reacts to a committed credit: a paid quote starts, a paused
// container with money again resumes.
func (d *Deployer) OnCredit(ctx context.Context, c billing.Credit) {
	rec, err := d.Records.Get(ctx, c.ContainerID)
	if err != nil {
		d.log.Error("credit for unknown container", "container", c.ContainerID, "err", err)
		return
	}
	switch rec.State {
	case records.StatePaid, records.StateFailed: // a quote is paid once its total is (billing)
		if err := d.Launch(ctx, rec.ID); err != nil {
			d.log.Warn("launch failed", "container", rec.ID, "err", err)
		}
	case records.StatePaused:
		if err := d.Resume(ctx, rec.ID); err != nil {
			d.log.Warn("resume failed", "container", rec.ID, "err", err)
		}
	}
}

// Launch pulls, creates and starts a paid container. If the instance lacks
// capacity it stays paid (its balance kept) and the owner is told. Every
// step is repeatable: a relaunch after a crash reuses what exists.
func (d *Deployer) Launch(ctx context.Context, id string) error {
	defer d.locks.lock(id)()
	return d.launch(ctx, id)
}

// launch is Launch with container id's lock held.
func (d *Deployer) launch(ctx context.Context, id string) error {
	rec, err := d.Records.Get(ctx, id)
	if err != nil {
		return err
	}
	switch rec.State {
	case records.StatePaid, records.StateStarting, records.StateFailed:
	default: // running already, removed, or an unpaid quote
		return nil
	}
	// The capacity check and the state that takes the units are one step
	// among all launches; the pull that follows holds no shared lock.
	d.admit.Lock()
	used, err := d.Records.UsedUnits(ctx, id)
	if err != nil {
		d.admit.Unlock()
		return err
	}
	if used+rec.Units > d.cfg.CapacityUnits {
		d.admit.Unlock()
		reason := fmt.Sprintf("no capacity: %d of %d units free, %d needed", d.cfg.CapacityUnits-used, d.cfg.CapacityUnits, rec.Units)
		if !strings.HasPrefix(rec.Reason, "no capacity") {
			d.Records.Transition(ctx, id, records.StatePaid, reason, nil)
			rec.State, rec.Reason = records.StatePaid, reason
			d.emit(ctx, Waiting{Of{rec}, d.cfg.CapacityUnits - used, d.cfg.CapacityUnits})
		}
		return nil
	}
	err = d.Records.Transition(ctx, id, records.StateStarting, "", nil)
	d.admit.Unlock()
	if err != nil {
		return err
	}
	fail := func(step string, err error) error {
		if ctx.Err() != nil {
			// Shutting down: the record stays starting and the next
			// start's Reconcile launches it again.
			return fmt.Errorf("launch %s: %s: %w", id, step, err)
		}
		d.Records.Transition(ctx, id, records.StateFailed, step+": "+err.Error(), nil)
		d.emit(ctx, Failed{Of{rec}, step})
		return fmt.Errorf("launch %s: %s: %w", id, step, err)
	}
	dockerID, step, err := d.create(ctx, rec)
	if err != nil {
		return fail(step, err)
	}
	crashpoint.Hit("after-create")
	if err := d.confine(ctx, rec); err != nil {
		return fail("egress", err)
	}
	if err := d.start(ctx, id, dockerID); err != nil {
		return fail("start", err)
	}
	now := d.now()
	if err := d.Records.Transition(ctx, id, records.StateRunning, "", func(tx *sql.Tx) error {
		if err := records.MarkRunning(ctx, tx, id, dockerID); err != nil {
			return err
		}
		return billing.StartMetering(ctx, tx, id, now)
	}); err != nil {
		return err
	}
	d.dropRestored(id)
	d.woke()
	rec, _ = d.Records.Get(ctx, id)
	d.log.Info("container running", "container", id, "units", rec.Units)
	d.emit(ctx, Running{Of{rec}})
	return nil
}

// create pulls the record's pinned image and creates its container,
// filling its volumes from a restored backup if one waits for it. It
// returns the runtime id, or the failed step and its error.
func (d *Deployer) create(ctx context.Context, rec records.Record) (string, string, error) {
	unlock := d.images.lock(rec.ImageRef)
	defer unlock()
	pctx, cancel := context.WithTimeout(ctx, cmp.Or(d.cfg.PullTimeout, 10*time.Minute))
	err := d.rt.Pull(pctx, rec.ImageRef, d.pullProgress(ctx, rec))
	cancel()
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || pctx.Err() != nil && ctx.Err() == nil {
			err = fmt.Errorf("the image did not arrive within %s", money.Human(cmp.Or(d.cfg.PullTimeout, 10*time.Minute)))
		}
		return "", "pull", err
	}
	// A layer's size unpacked is known only now (the quote counted what
	// the registry said): an image that unpacks past the units' disk is
	// removed again and not run.
	if disk := rec.Units * d.cfg.Unit.DiskBytes; disk > 0 {
		size, err := d.rt.ImageSize(ctx, rec.ImageRef)
		if err != nil {
			return "", "pull", err
		}
		if size > disk {
			if err := d.rt.RemoveImage(ctx, rec.ImageRef); err != nil {
				d.log.Warn("removing an oversized image", "image", rec.ImageRef, "err", err)
			}
			return "", "pull", fmt.Errorf("the image takes %d MiB unpacked; %d unit(s) give %d MiB of disk", size>>20, rec.Units, disk>>20)
		}
	}
	env := make([]string, 0, len(rec.Env))
	for _, kv := range rec.Env {
		env = append(env, kv[0]+"="+kv[1])
	}
	_, hosts, err := d.plan(rec)
	if err != nil {
		return "", "egress", err
	}
	u := d.cfg.Unit
	dockerID, err := d.rt.Create(ctx, Spec{
		Name: RuntimeName(rec.ID), Image: rec.ImageRef, Env: env, ExtraHosts: hosts,
		Labels:   map[string]string{LabelID: rec.ID, LabelInstance: d.cfg.Instance},
		NanoCPUs: rec.Units * u.NanoCPUs, MemoryBytes: rec.Units * u.MemoryBytes, Pids: rec.Units * u.Pids,
		DiskBytes: rec.Units * u.DiskBytes, ReadonlyRoot: !rec.HasVolumes,
	})
	if err != nil {
		return "", "create", err
	}
	if err := d.importVolumes(ctx, rec.ID, dockerID); err != nil {
		return "", "restoring its volumes", err
	}
	return dockerID, "", nil
}

// Pull progress: the renter hears about a pull that takes longer than
// slowPull, then at most every pullNoticeEvery.
const (
	slowPull        = 10 * time.Second
	pullNoticeEvery = 30 * time.Second
)

func (d *Deployer) pullProgress(ctx context.Context, rec records.Record) func(string) {
	start := d.now()
	var last time.Time
	return func(status string) {
		now := d.now()
		if now.Sub(start) < slowPull || (!last.IsZero() && now.Sub(last) < pullNoticeEvery) {
			return
		}
		last = now
		d.emit(ctx, Pulling{Of{rec}, status, now.Sub(start).Round(time.Second)})
	}
}

// RuntimeName is the runtime's name for a container record.
func RuntimeName(id string) string { return "enclaved-" + id }

// RetainUntil is when a paused or stopped container is removed, unless it
// runs again before.
func (d *Deployer) RetainUntil(rec records.Record) time.Time {
	return rec.PausedAt.Add(d.cfg.Retention)
}

// Pause stops a running container and its meter (balance exhausted).
func (d *Deployer) Pause(ctx context.Context, id, reason string) error {
	return d.halt(ctx, id, records.StatePaused, reason)
}

func (d *Deployer) halt(ctx context.Context, id, state, reason string) error {
	defer d.locks.lock(id)()
	return d.haltLocked(ctx, id, state, reason)
}

// haltLocked is halt with container id's lock held.
func (d *Deployer) haltLocked(ctx context.Context, id, state, reason string) error {
	rec, err := d.Records.Get(ctx, id)
	if err != nil {
		return err
	}
	if rec.State != records.StateRunning {
		return nil
	}
	now := d.now()
	// Record first (metering stops now), then stop the runtime: a crash in
	// between leaves a halted record whose container Reconcile stops.
	if err := d.Records.Transition(ctx, id, state, reason, func(tx *sql.Tx) error {
		if _, err := billing.StopMetering(ctx, tx, id, now); err != nil {
			return err
		}
		return records.MarkHalted(ctx, tx, id, now)
	}); err != nil {
		return err
	}
	return d.stop(ctx, id, rec.DockerID)
}

// Resume starts a paused or stopped container again, if its balance pays
// for some running time.
func (d *Deployer) Resume(ctx context.Context, id string) error {
	defer d.locks.lock(id)()
	return d.resume(ctx, id)
}

// resume is Resume with container id's lock held.
func (d *Deployer) resume(ctx context.Context, id string) error {
	rec, err := d.Records.Get(ctx, id)
	if err != nil {
		return err
	}
	if rec.State != records.StatePaused && rec.State != records.StateStopped && rec.State != records.StateExited {
		return nil
	}
	if rec.Left() <= 0 {
		return &records.UserError{Msg: rec.Name + " has no balance left: top it up first"}
	}
	// A container the runtime lost (the enclave restarted from a backup)
	// is created again, with its volumes from the backup.
	if ok, err := d.present(ctx, id); err != nil {
		return err
	} else if !ok {
		dockerID, step, err := d.create(ctx, rec)
		if err != nil {
			return fmt.Errorf("%s: %w", step, err)
		}
		rec.DockerID = dockerID
	}
	if err := d.confine(ctx, rec); err != nil {
		return err
	}
	if err := d.start(ctx, id, rec.DockerID); err != nil {
		return err
	}
	now := d.now()
	if err := d.Records.Transition(ctx, id, records.StateRunning, "", func(tx *sql.Tx) error {
		if err := records.MarkRunning(ctx, tx, id, rec.DockerID); err != nil {
			return err
		}
		return billing.StartMetering(ctx, tx, id, now)
	}); err != nil {
		return err
	}
	d.dropRestored(id)
	d.woke()
	d.emit(ctx, Resumed{Of{rec}})
	return nil
}

// Remove removes a container from the runtime for good. Its ledger stays.
func (d *Deployer) Remove(ctx context.Context, id, reason string) error {
	defer d.locks.lock(id)()
	return d.remove(ctx, id, reason)
}

// remove is Remove with container id's lock held.
func (d *Deployer) remove(ctx context.Context, id, reason string) error {
	rec, err := d.Records.Get(ctx, id)
	if err != nil {
		return err
	}
	if rec.State == records.StateRemoved {
		return nil
	}
	now := d.now()
	if err := d.Records.Transition(ctx, id, records.StateRemoved, reason, func(tx *sql.Tx) error {
		_, err := billing.StopMetering(ctx, tx, id, now)
		return err
	}); err != nil {
		return err
	}
	d.cancelOpen(ctx, id)
	d.dropRestored(id)
	d.setIdle(id, false)
	if d.cfg.Confiner != nil {
		if err := d.cfg.Confiner.Release(ctx, RuntimeName(id)); err != nil {
			d.log.Warn("egress proxy release", "container", id, "err", err)
		}
	}
	if rec.DockerID != "" {
		if err := d.rt.Remove(ctx, rec.DockerID); err != nil {
			return err
		}
	}
	// Its network, also when the container never was or was removed from
	// outside (else Reconcile removes it at the next start).
	if err := d.rt.RemoveNetwork(ctx, RuntimeName(id)); err != nil {
		d.log.Warn("removing its network", "container", id, "err", err)
	}
	d.dropImage(ctx, rec.ImageRef)
	return nil
}

// dropImage removes a pinned image no live container uses any more: inside
// the enclave the image store is RAM. A launch of the same image under
// way keeps it.
func (d *Deployer) dropImage(ctx context.Context, ref string) {
	unlock, ok := d.images.tryLock(ref)
	if !ok {
		return // being pulled or created from: in use
	}
	defer unlock()
	if used, err := d.Records.ImageInUse(ctx, ref); err != nil || used {
		return
	}
	if err := d.rt.RemoveImage(ctx, ref); err != nil {
		d.log.Warn("removing an unused image", "image", ref, "err", err)
		return
	}
	d.log.Info("unused image removed", "image", ref)
}
