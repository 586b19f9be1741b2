package backup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"filippo.io/age"
)

// Container volumes live in blobs of their own, two per container
// ("vol-ID-a", "vol-ID-b"), so that a backup carries again only what may
// have changed: a container that ran copies its volumes at most every
// Backuper.VolumeEvery (each copy freezes it for a moment), one that
// stopped once after it stopped; every other backup names the blob of
// the copy before. A new copy goes to the blob the newest recorded
// checkpoint does not name, like the database's two slots.

var containerID = regexp.MustCompile(`^[0-9a-f]{1,64}$`)

// volumeBlob is the blob a new copy of container id's volumes goes to:
// the one prev (the copy the newest recorded checkpoint names) is not in.
func volumeBlob(id string, prev VolumeRef, ok bool) string {
	a, b := "vol-"+id+"-a", "vol-"+id+"-b"
	if ok && prev.Blob == a {
		return b
	}
	return a
}

// VolumeSkip is a container whose volumes a backup could not copy: it
// named the copy taken at Kept instead (zero: none, so no backup holds
// them).
type VolumeSkip struct {
	ID   string
	Err  error
	Kept time.Time
	// Tried is when the failed copy began.
	Tried time.Time
}

// volumeRun is what saveVolumes did: the containers whose volumes are
// kept, the refs the backup names, the containers it skipped and those it
// copied.
type volumeRun struct {
	ids     []string
	refs    map[string]VolumeRef
	skipped []VolumeSkip
	copied  []string
}

// saveVolumes stores the volumes of every container that may run again
// that changed since their last copy, and returns what this backup names
// for each. final (at shutdown) copies every running container afresh.
//
// One container's failure (its export, its size, the parent's blob limit,
// its transfer's deadline) skips that container, not the backup: the
// backup names its last copy, if any, and its owner is told once the
// backup is recorded (then not again until a copy succeeds). A failed
// container is tried again once Interval has passed, so a volume that
// cannot be copied does not freeze its container at every backup, or as
// soon as it stopped running after the failed copy began: a stop in the
// middle of a copy (which thaws it under the copy) fails the copy, and
// the stopped container's volumes, which no longer change, are then
// copied at the next backup instead of Interval later (a restart in
// between would bring back older data). Only the end of ctx fails the
// backup.
func (b *Backuper) saveVolumes(ctx context.Context, to age.Recipient, final bool) (volumeRun, error) {
	ids, err := b.Volumes.VolumeIDs(ctx)
	if err != nil {
		return volumeRun{}, fmt.Errorf("volumes: %w", err)
	}
	b.mu.Lock()
	kept := maps.Clone(b.vols)
	b.mu.Unlock()
	run := volumeRun{ids: ids, refs: make(map[string]VolumeRef, len(ids))}
	for _, id := range ids {
		if !containerID.MatchString(id) {
			b.Log.Warn("volumes of a container with an id a restore would refuse are left out", "container", id)
			continue
		}
		prev, ok := kept[id]
		since, idle := b.Volumes.Idle(ctx, id)
		at := time.UnixMilli(prev.At)
		failedAt, failed := b.failed[id]
		switch {
		case failed && b.Now().Sub(failedAt) < b.Interval && !(idle && since.After(failedAt)):
			if ok {
				run.refs[id] = prev // failed lately: not tried again yet
			}
			continue
		case ok && idle && !at.Before(since):
			run.refs[id] = prev // copied after it last ran
			continue
		case ok && !idle && !final && b.Now().Sub(at) < b.VolumeEvery:
			run.refs[id] = prev // running, copied recently enough
			continue
		}
		tried := b.Now()
		ref, err := b.putVolume(ctx, to, id, volumeBlob(id, prev, ok))
		switch {
		case ctx.Err() != nil:
			return volumeRun{}, fmt.Errorf("volumes of %s: %w", id, ctx.Err())
		case errors.Is(err, fs.ErrNotExist):
			continue // removed meanwhile
		case err != nil:
			b.Log.Warn("volumes not backed up: the container is skipped", "container", id, "err", err)
			skip := VolumeSkip{ID: id, Err: err, Tried: tried}
			if ok {
				run.refs[id], skip.Kept = prev, at
			}
			run.skipped = append(run.skipped, skip)
			continue
		}
		run.refs[id] = ref
		run.copied = append(run.copied, id)
	}
	return run, nil
}

// volumesRecorded notes, once a backup is recorded, which containers it
// skipped and tells the owners of those newly failing.
func (b *Backuper) volumesRecorded(ctx context.Context, run volumeRun) {
	for id := range b.failed {
		if slices.Contains(run.copied, id) || !slices.Contains(run.ids, id) {
			delete(b.failed, id)
		}
	}
	for _, s := range run.skipped {
		_, told := b.failed[s.ID]
		b.failed[s.ID] = s.Tried
		if !told && b.VolumesSkipped != nil {
			nctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			b.VolumesSkipped(nctx, s)
			cancel()
		}
	}
}

// putVolume copies container id's volumes, encrypted, into blob name. The
// export ends with the put (its context is cancelled then): a container
// frozen for the copy is thawed even if the put failed or stalled.
func (b *Backuper) putVolume(ctx context.Context, to age.Recipient, id, name string) (VolumeRef, error) {
	ref := VolumeRef{ID: id, Blob: name, At: b.Now().UnixMilli()}
	h := sha256.New()
	var size countWriter
	pr, pw := io.Pipe()
	exported := make(chan error, 1)
	xctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		enc, err := age.Encrypt(io.MultiWriter(pw, h, &size), to)
		if err == nil {
			if err = b.Volumes.ExportVolumes(xctx, id, enc); err == nil {
				err = enc.Close()
			}
		}
		pw.CloseWithError(err)
		exported <- err
	}()
	err := b.Blobs.Put(ctx, name, pr)
	pr.CloseWithError(errors.New("put ended"))
	cancel()
	xerr := <-exported
	switch {
	case xerr != nil && (err == nil || errors.Is(err, xerr)):
		// The export failed (and the put with it).
		return ref, fmt.Errorf("volumes of %s: %w", id, xerr)
	case err != nil:
		return ref, fmt.Errorf("volumes of %s: %w", id, err)
	}
	ref.SHA256, ref.Size = hex.EncodeToString(h.Sum(nil)), int64(size)
	return ref, nil
}

// dropVolumes empties the blobs of containers whose volumes no backup
// names any more (removed), once a checkpoint without them is recorded.
func (b *Backuper) dropVolumes(ctx context.Context, before, now map[string]VolumeRef) {
	for id := range before {
		if _, ok := now[id]; ok {
			continue
		}
		for _, name := range []string{"vol-" + id + "-a", "vol-" + id + "-b"} {
			if err := b.Blobs.Put(ctx, name, strings.NewReader("")); err != nil {
				b.Log.Warn("emptying a removed container's volume blob", "blob", name, "err", err)
			}
		}
	}
}

// sortedRefs lists refs by container id, as the manifest carries them.
func sortedRefs(refs map[string]VolumeRef) []VolumeRef {
	out := make([]VolumeRef, 0, len(refs))
	for _, id := range slices.Sorted(maps.Keys(refs)) {
		out = append(out, refs[id])
	}
	return out
}

// restoreVolumes fetches each volume blob m names, refuses any whose
// size or sha256 differs from the manifest's, and decrypts it into volDir
// as ID.tar. tmpDir holds a blob while it is checked.
func restoreVolumes(ctx context.Context, blobs Blobs, id age.Identity, m Manifest, tmpDir, volDir string) error {
	for _, ref := range m.Volumes {
		if !containerID.MatchString(ref.ID) || (ref.Blob != "vol-"+ref.ID+"-a" && ref.Blob != "vol-"+ref.ID+"-b") ||
			ref.Size < 0 || ref.Size > MaxFile {
			return &RefusedError{fmt.Sprintf("backup %d names volumes %q in blob %q", m.Seq, ref.ID, ref.Blob)}
		}
		if err := restoreVolume(ctx, blobs, id, m.Seq, ref, tmpDir, volDir); err != nil {
			return err
		}
	}
	return nil
}

func restoreVolume(ctx context.Context, blobs Blobs, id age.Identity, seq uint64, ref VolumeRef, tmpDir, volDir string) error {
	rc, err := blobs.Get(ctx, ref.Blob)
	if errors.Is(err, os.ErrNotExist) {
		return &RefusedError{fmt.Sprintf("the volumes of container %s (blob %s) in backup %d are missing at the parent", ref.ID, ref.Blob, seq)}
	}
	if err != nil {
		return fmt.Errorf("fetch volumes of %s: %w", ref.ID, err)
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(tmpDir, ".restore-vol-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(rc, ref.Size+1))
	if err != nil {
		return fmt.Errorf("fetch volumes of %s: %w", ref.ID, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != ref.SHA256 || n != ref.Size {
		return &RefusedError{fmt.Sprintf("the volumes of container %s (blob %s) do not match backup %d (%d bytes, want %d): altered, or an older copy",
			ref.ID, ref.Blob, seq, n, ref.Size)}
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return err
	}
	dec, err := age.Decrypt(tmp, id)
	if err != nil {
		return &RefusedError{fmt.Sprintf("the volumes of container %s: %v", ref.ID, err)}
	}
	if err := os.MkdirAll(volDir, 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(volDir, ref.ID+".tar"), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, io.LimitReader(dec, MaxFile))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name()) // no part of an archive that did not decrypt whole
		return &RefusedError{fmt.Sprintf("the volumes of container %s: %v", ref.ID, err)}
	}
	return nil
}
