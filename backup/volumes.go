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

// saveVolumes stores the volumes of every container that may run again
// that changed since their last copy, and returns what this backup names
// for each. final (at shutdown) copies every running container afresh.
func (b *Backuper) saveVolumes(ctx context.Context, to age.Recipient, final bool) (map[string]VolumeRef, error) {
	ids, err := b.Volumes.VolumeIDs(ctx)
	if err != nil {
		return nil, fmt.Errorf("volumes: %w", err)
	}
	b.mu.Lock()
	kept := maps.Clone(b.vols)
	b.mu.Unlock()
	out := make(map[string]VolumeRef, len(ids))
	for _, id := range ids {
		if !containerID.MatchString(id) {
			b.Log.Warn("volumes of a container with an id a restore would refuse are left out", "container", id)
			continue
		}
		prev, ok := kept[id]
		since, idle := b.Volumes.Idle(ctx, id)
		at := time.UnixMilli(prev.At)
		switch {
		case ok && idle && !at.Before(since):
			out[id] = prev // copied after it last ran
			continue
		case ok && !idle && !final && b.Now().Sub(at) < b.VolumeEvery:
			out[id] = prev // running, copied recently enough
			continue
		}
		ref, err := b.putVolume(ctx, to, id, volumeBlob(id, prev, ok))
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		out[id] = ref
	}
	return out, nil
}

// putVolume copies container id's volumes, encrypted, into blob name.
func (b *Backuper) putVolume(ctx context.Context, to age.Recipient, id, name string) (VolumeRef, error) {
	ref := VolumeRef{ID: id, Blob: name, At: b.Now().UnixMilli()}
	h := sha256.New()
	var size countWriter
	pr, pw := io.Pipe()
	exported := make(chan error, 1)
	go func() {
		enc, err := age.Encrypt(io.MultiWriter(pw, h, &size), to)
		if err == nil {
			if err = b.Volumes.ExportVolumes(ctx, id, enc); err == nil {
				err = enc.Close()
			}
		}
		pw.CloseWithError(err)
		exported <- err
	}()
	err := b.Blobs.Put(ctx, name, pr)
	pr.CloseWithError(errors.New("put ended"))
	if xerr := <-exported; xerr != nil {
		return ref, fmt.Errorf("volumes of %s: %w", id, xerr)
	}
	if err != nil {
		return ref, fmt.Errorf("store blob %s: %w", name, err)
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
		return &RefusedError{fmt.Sprintf("the volumes of container %s: %v", ref.ID, err)}
	}
	return nil
}
