package deployer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/enclaved/enclaved/records"
)

// Container volumes in backups. A backup (backup.Backuper) keeps the
// volumes of every container that may run again; a restore leaves each
// one in Config.RestoreDir as ID.tar, and the container's volumes are
// filled from it when the container is created again. Until then the
// file is what the next backup keeps, so no backup taken in between loses
// it.

// VolumeIDs lists the containers whose volumes a backup keeps: those
// whose image declares volumes, that were created and may run again.
func (d *Deployer) VolumeIDs(ctx context.Context) ([]string, error) {
	return d.Records.WithVolumes(ctx)
}

// ExportVolumes writes container id's volumes to w as one tar: the
// restored archive still waiting for it, or what its runtime container
// holds now. A container with neither is fs.ErrNotExist. It does not
// hold the lifecycle lock: a backup never waits for a pull.
//
// The archive is capped at the container's units' disk: the storage
// driver does not bound volumes (at best the container's own layer), so
// a container could fill the host's disk and every backup with them.
// Beyond the cap the export stops with a *VolumesTooLargeError.
func (d *Deployer) ExportVolumes(ctx context.Context, id string, w io.Writer) error {
	rec, err := d.Records.Get(ctx, id)
	if errors.Is(err, records.ErrNotFound) {
		return fmt.Errorf("container %s: %w", id, fs.ErrNotExist)
	} else if err != nil {
		return err
	}
	if limit := rec.Units * d.cfg.Unit.DiskBytes; limit > 0 {
		w = &capWriter{w: w, left: limit, err: &VolumesTooLargeError{Container: rec.Name, Units: rec.Units, Limit: limit}}
	}
	if p := d.restoredPath(id); p != "" {
		f, err := os.Open(p)
		if err == nil {
			defer f.Close()
			_, err = io.Copy(w, f)
			return err
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		// None, or imported meanwhile: the container holds it now.
	}
	if rec.DockerID == "" {
		return fmt.Errorf("container %s: %w", id, fs.ErrNotExist)
	}
	return d.rt.ExportVolumes(ctx, rec.DockerID, w)
}

// VolumesTooLargeError is a container's volumes over its units' disk,
// which a backup refuses to copy.
type VolumesTooLargeError struct {
	Container    string // its name
	Units, Limit int64
}

func (e *VolumesTooLargeError) Error() string {
	return fmt.Sprintf("the volumes of %s hold more than its disk of %s (%d unit(s)): not backed up until they fit",
		e.Container, bytesText(e.Limit), e.Units)
}

// bytesText is n in MiB, or in bytes if it is not a whole number of them.
func bytesText(n int64) string {
	if n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}

// capWriter fails with err once more than left bytes are written.
type capWriter struct {
	w    io.Writer
	left int64
	err  error
}

func (c *capWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > c.left {
		return 0, c.err
	}
	c.left -= int64(len(p))
	return c.w.Write(p)
}

// VolumesNotSaved tells container id's owner that a backup could not copy
// its volumes (err) and kept their copy of kept instead (zero: none).
// Only this instance's own words reach the owner: what the parent said
// stays in the log.
func (d *Deployer) VolumesNotSaved(ctx context.Context, id string, kept time.Time, err error) {
	rec, gerr := d.Records.Get(ctx, id)
	if gerr != nil {
		return
	}
	d.emit(ctx, VolumesNotSaved{Of{rec}, err, kept})
}

// Idle says since when container id has not run (ok false: it may be
// running), so a backup copies its volumes again only if they may have
// changed since its last copy. A container still waiting for its restored
// archive is idle since the zero time: the backup restored from names
// that very copy.
func (d *Deployer) Idle(ctx context.Context, id string) (time.Time, bool) {
	if p := d.restoredPath(id); p != "" {
		if _, err := os.Stat(p); err == nil {
			return time.Time{}, true
		}
	}
	d.idleMu.Lock()
	defer d.idleMu.Unlock()
	t, ok := d.idle[id]
	return t, ok
}

// setIdle records that container id stopped (idle since now) or is about
// to run (its volumes may change from now on).
func (d *Deployer) setIdle(id string, idle bool) {
	if idle {
		d.idleSince(id, d.now())
		return
	}
	d.idleMu.Lock()
	delete(d.idle, id)
	d.idleMu.Unlock()
}

func (d *Deployer) idleSince(id string, t time.Time) {
	d.idleMu.Lock()
	d.idle[id] = t
	d.idleMu.Unlock()
}

// start starts container id's runtime container; stop stops it. Both
// keep Idle true to the runtime.
func (d *Deployer) start(ctx context.Context, id, dockerID string) error {
	d.setIdle(id, false)
	return d.rt.Start(ctx, dockerID)
}

func (d *Deployer) stop(ctx context.Context, id, dockerID string) error {
	if err := d.rt.Stop(ctx, dockerID); err != nil {
		return err
	}
	d.setIdle(id, true)
	return nil
}

// restoredPath is where a restore leaves container id's volume archive
// (which may not be there), or "" without a RestoreDir.
func (d *Deployer) restoredPath(id string) string {
	if d.cfg.RestoreDir == "" || strings.ContainsAny(id, `/\.`) {
		return ""
	}
	return filepath.Join(d.cfg.RestoreDir, id+".tar")
}

// dropRestored removes container id's restored volume archive, if any:
// the container holds the data now, or will not run again.
func (d *Deployer) dropRestored(id string) {
	p := d.restoredPath(id)
	if p == "" {
		return
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		d.log.Warn("removing a restored volume archive", "container", id, "err", err)
	}
}

// importVolumes fills the created container's volumes from its restored
// archive, if one waits. The archive stays until the container runs.
func (d *Deployer) importVolumes(ctx context.Context, id, dockerID string) error {
	p := d.restoredPath(id)
	if p == "" {
		return nil
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	defer f.Close()
	if err := d.rt.ImportVolumes(ctx, dockerID, f); err != nil {
		return err
	}
	d.log.Info("volumes restored from the backup", "container", id)
	return nil
}

// dropStaleRestores removes restored archives of containers that will
// not run again.
func (d *Deployer) dropStaleRestores(ctx context.Context) {
	if d.cfg.RestoreDir == "" {
		return
	}
	entries, err := os.ReadDir(d.cfg.RestoreDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), ".tar")
		if !ok {
			continue
		}
		if live, err := d.Records.MayRunAgain(ctx, id); err == nil && !live {
			d.dropRestored(id)
		}
	}
}
