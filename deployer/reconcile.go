package deployer

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/enclaved/enclaved/billing"
)

// Reconcile brings the runtime in line with the records, at start: runtime
// containers of this instance without a live record are stopped and
// reported; records that should run are (re)started from their pinned
// digest, or marked failed; halted records' containers are stopped; a
// paused container credited while the instance was down resumes.
func (d *Deployer) Reconcile(ctx context.Context) error {
	list, err := d.rt.List(ctx)
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	present := map[string]Info{}
	for _, c := range list {
		if c.Labels[LabelInstance] != d.cfg.Instance {
			continue
		}
		id := c.Labels[LabelID]
		rec, err := d.Get(ctx, id)
		if errors.Is(err, ErrNotFound) || (err == nil && rec.State == StateRemoved) {
			d.log.Warn("stopping a container with no live record", "runtime_id", c.ID, "record", id)
			if c.Running {
				d.rt.Stop(ctx, c.ID)
			}
			continue
		}
		present[id] = c
	}
	for _, state := range []string{StateRunning, StateStarting, StatePaid, StatePaused, StateStopped} {
		ids, err := d.idsIn(ctx, state)
		if err != nil {
			return err
		}
		for _, id := range ids {
			c, exists := present[id]
			switch state {
			case StateRunning:
				if !exists {
					d.log.Warn("running container missing from the runtime; recreating", "container", id)
					d.setState(ctx, id, StatePaid, "recreating", func(tx *sql.Tx) error {
						_, err := billing.StopMetering(ctx, tx, id, d.now())
						return err
					})
					err = d.Launch(ctx, id)
				} else if rec, gerr := d.Get(ctx, id); gerr != nil {
					err = gerr
				} else if err = d.confine(ctx, rec); err == nil && !c.Running {
					err = d.start(ctx, id, c.ID)
				}
			case StateStarting, StatePaid:
				err = d.Launch(ctx, id)
			case StatePaused, StateStopped:
				if !exists {
					err = d.recreate(ctx, id)
				} else if c.Running {
					err = d.stop(ctx, id, c.ID)
				} else {
					d.setIdle(id, true)
				}
				if rec, gerr := d.Get(ctx, id); gerr == nil && state == StatePaused && rec.Left() > 0 {
					err = d.Resume(ctx, id)
				}
			}
			if err != nil {
				d.log.Warn("reconcile", "container", id, "state", state, "err", err)
			}
		}
	}
	d.dropStaleRestores(ctx)
	return nil
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
	rec, err := d.Get(ctx, id)
	if err != nil || (rec.State != StatePaused && rec.State != StateStopped) || rec.DockerID == "" {
		return err
	}
	dockerID, step, err := d.create(ctx, rec)
	if err != nil {
		return fmt.Errorf("recreate %s: %s: %w", id, step, err)
	}
	if _, err := d.db.ExecContext(ctx, `UPDATE containers SET docker_id = ? WHERE id = ?`, dockerID, id); err != nil {
		return err
	}
	// Its volumes hold the restored copy, which the backups name already.
	d.idleSince(id, time.Time{})
	d.dropRestored(id)
	d.log.Info("halted container created again", "container", id, "state", rec.State)
	return nil
}
