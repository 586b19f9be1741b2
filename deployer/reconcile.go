package deployer

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/enclaved/enclaved/billing"
	"github.com/enclaved/enclaved/records"
)

// Reconcile brings the runtime in line with the records, at start: runtime
// containers of this instance without a live record are stopped and
// reported; records that should run are (re)started from their pinned
// digest, or marked failed; halted records' containers are stopped; a
// paused container credited while the instance was down resumes; networks
// left by containers removed from outside are removed. The outage itself
// is never charged: containers that ran through it are charged up to the
// last metering beat, and from now on.
func (d *Deployer) Reconcile(ctx context.Context) error {
	list, err := d.rt.List(ctx)
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	beat, err := d.ledger.LastBeat(ctx)
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	present := map[string]Info{}
	for _, c := range list {
		if c.Labels[LabelInstance] != d.cfg.Instance {
			continue
		}
		id := c.Labels[LabelID]
		rec, err := d.Records.Get(ctx, id)
		if errors.Is(err, records.ErrNotFound) || (err == nil && rec.State == records.StateRemoved) {
			d.log.Warn("stopping a container with no live record", "runtime_id", c.ID, "record", id)
			if c.Running {
				d.rt.Stop(ctx, c.ID)
			}
			continue
		}
		present[id] = c
	}
	for _, state := range []string{records.StateRunning, records.StateStarting, records.StatePaid, records.StatePaused, records.StateStopped, records.StateExited} {
		ids, err := d.Records.InState(ctx, state)
		if err != nil {
			return err
		}
		for _, id := range ids {
			c, exists := present[id]
			switch state {
			case records.StateRunning:
				var relaunch bool
				if relaunch, err = d.adopt(ctx, id, c, exists, beat); err == nil && relaunch {
					err = d.Launch(ctx, id)
				}
			case records.StateStarting, records.StatePaid:
				err = d.Launch(ctx, id)
			case records.StatePaused, records.StateStopped, records.StateExited:
				if !exists {
					err = d.recreate(ctx, id)
				} else if c.Running {
					err = d.stop(ctx, id, c.ID)
				} else {
					d.setIdle(id, true)
				}
				if rec, gerr := d.Records.Get(ctx, id); gerr == nil && state == records.StatePaused && rec.Left() > 0 {
					err = d.Resume(ctx, id)
				}
			}
			if err != nil {
				d.log.Warn("reconcile", "container", id, "state", state, "err", err)
			}
		}
	}
	d.dropStaleRestores(ctx)
	d.dropRemovedImages(ctx)
	d.dropOrphanNetworks(ctx)
	return nil
}

// dropOrphanNetworks removes this instance's container networks (enclaved-*,
// labelled with it) that no runtime container of that name has and whose
// record is removed or unknown: the container was removed from outside, or
// never made. (A live record's network stays: its next launch uses it.)
// Networks of other instances on the engine are never touched.
func (d *Deployer) dropOrphanNetworks(ctx context.Context) {
	nets, err := d.rt.Networks(ctx)
	if err != nil {
		d.log.Warn("listing networks", "err", err)
		return
	}
	list, err := d.rt.List(ctx)
	if err != nil {
		d.log.Warn("listing containers", "err", err)
		return
	}
	named := map[string]bool{}
	for _, c := range list {
		named[c.Name] = true
	}
	for _, n := range nets {
		if n.Labels[LabelInstance] != d.cfg.Instance || !strings.HasPrefix(n.Name, RuntimeName("")) || named[n.Name] {
			continue
		}
		rec, err := d.Records.Get(ctx, n.Labels[LabelID])
		switch {
		case errors.Is(err, records.ErrNotFound):
		case err != nil:
			d.log.Warn("reading a network's record", "network", n.Name, "err", err)
			continue
		case rec.State != records.StateRemoved:
			continue
		}
		if err := d.rt.RemoveNetwork(ctx, n.Name); err != nil {
			d.log.Warn("removing an orphaned network", "network", n.Name, "err", err)
			continue
		}
		d.log.Info("orphaned network removed", "network", n.Name, "record", n.Labels[LabelID])
	}
}

// dropRemovedImages removes the images of containers removed in the last
// day that no live container uses: the instance may have stopped between
// a removal and its image's.
func (d *Deployer) dropRemovedImages(ctx context.Context) {
	refs, err := d.Records.RemovedImages(ctx, d.now().Add(-24*time.Hour), 1000)
	if err != nil {
		d.log.Warn("listing removed containers' images", "err", err)
		return
	}
	for _, ref := range refs {
		d.dropImage(ctx, ref)
	}
}

// adopt takes over a container whose record says it runs, after an outage
// of the instance (beat: when metering last ran). It is charged up to the
// beat, never for the gap, and then:
//   - gone from the runtime (an enclave restarted from a backup): it is
//     launched again (relaunch), metered from its start;
//   - running: metered from now;
//   - stopped before the beat: it exited on its own while the instance
//     ran and the exit went unseen: it is exited, charged up to then;
//   - stopped during the outage (the host went down with it): started
//     again, metered from now.
func (d *Deployer) adopt(ctx context.Context, id string, c Info, exists bool, beat time.Time) (relaunch bool, err error) {
	defer d.locks.lock(id)()
	rec, err := d.Records.Get(ctx, id)
	if err != nil || rec.State != records.StateRunning {
		return false, err
	}
	now := d.now()
	if !exists {
		d.log.Warn("running container missing from the runtime; recreating", "container", id)
		return true, d.Records.Transition(ctx, id, records.StatePaid, "recreating", func(tx *sql.Tx) error {
			_, err := billing.RestartMetering(ctx, tx, id, beat, now, false)
			return err
		})
	}
	if !c.Running {
		st, err := d.rt.State(ctx, c.ID)
		if err != nil {
			return false, err
		}
		if !st.Running && !st.Gone && !beat.IsZero() && st.FinishedAt.Before(beat) {
			d.exited(ctx, rec, st, now)
			return false, nil
		}
	}
	if err := d.confine(ctx, rec); err != nil {
		return false, err
	}
	if !c.Running {
		if err := d.start(ctx, id, c.ID); err != nil {
			return false, err
		}
	}
	tx, err := d.db.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer tx.Rollback()
	if _, err := billing.RestartMetering(ctx, tx, id, beat, now, true); err != nil {
		return false, err
	}
	return false, tx.Commit()
}

// present says whether the runtime has container id.
func (d *Deployer) present(ctx context.Context, id string) (bool, error) {
	list, err := d.rt.List(ctx)
	if err != nil {
		return false, err
	}
	for _, c := range list {
		if c.Labels[LabelID] == id && c.Labels[LabelInstance] == d.cfg.Instance {
			return true, nil
		}
	}
	return false, nil
}

// recreate creates a halted container the runtime lost (an enclave
// restarted from a backup) without starting it, so that its volumes,
// filled from the backup, are kept in the runtime from now on.
func (d *Deployer) recreate(ctx context.Context, id string) error {
	defer d.locks.lock(id)()
	rec, err := d.Records.Get(ctx, id)
	if err != nil || (rec.State != records.StatePaused && rec.State != records.StateStopped) || rec.DockerID == "" {
		return err
	}
	dockerID, step, err := d.create(ctx, rec)
	if err != nil {
		return fmt.Errorf("recreate %s: %s: %w", id, step, err)
	}
	if err := records.SetRuntimeID(ctx, d.db, id, dockerID); err != nil {
		return err
	}
	// Its volumes hold the restored copy, which the backups name already.
	d.idleSince(id, time.Time{})
	d.dropRestored(id)
	d.log.Info("halted container created again", "container", id, "state", rec.State)
	return nil
}
