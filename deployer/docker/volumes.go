package docker

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/errdefs"
)

// The volume archive is one tar holding every volume of a container, each
// entry named by its full path in the container without the leading slash
// ("data/starts" for /data/starts). The volume's own directory is not an
// entry: the new container's volume is created from the same image.

// volumes returns the destinations of a container's volume mounts, longest
// first, so that a path belongs to the first one it is under.
func (r *Runtime) volumes(ctx context.Context, id string) (container.InspectResponse, []string, error) {
	info, err := r.c.ContainerInspect(ctx, id)
	if errdefs.IsNotFound(err) {
		return info, nil, fmt.Errorf("container %s: %w", short(id), fs.ErrNotExist)
	} else if err != nil {
		return info, nil, err
	}
	var dests []string
	for _, m := range info.Mounts {
		if m.Type == mount.TypeVolume && path.IsAbs(m.Destination) && path.Clean(m.Destination) != "/" {
			dests = append(dests, path.Clean(m.Destination))
		}
	}
	sort.Slice(dests, func(i, j int) bool {
		if len(dests[i]) != len(dests[j]) {
			return len(dests[i]) > len(dests[j])
		}
		return dests[i] < dests[j]
	})
	return info, dests, nil
}

// owner is the mount of dests that name (a slash-less full path) is in.
func owner(dests []string, name string) string {
	for _, d := range dests {
		rel := d[1:]
		if name == rel || strings.HasPrefix(name, rel+"/") {
			return d
		}
	}
	return ""
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// ExportVolumes writes the contents of container id's volumes to w as one
// tar. A running container is frozen (docker pause) while its volumes are
// read, so the copy is what a crash at that moment would leave on disk;
// it is thawed afterwards on every path: the export failing, w failing
// (a blob refused or past its deadline), ctx ending, even a pause that
// reported an error (it may have frozen it all the same). A thaw that
// fails is the export's error. A container that does not exist is
// reported as fs.ErrNotExist.
func (r *Runtime) ExportVolumes(ctx context.Context, id string, w io.Writer) (err error) {
	info, dests, err := r.volumes(ctx, id)
	if err != nil {
		return err
	}
	if info.State != nil && info.State.Running && !info.State.Paused {
		perr := r.c.ContainerPause(ctx, id)
		defer func() {
			tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			if uerr := r.c.ContainerUnpause(tctx, id); uerr != nil && perr == nil {
				err = errors.Join(err, fmt.Errorf("thawing container %s: %w", short(id), uerr))
			}
		}()
	}
	tw := tar.NewWriter(w)
	// Shortest first, so a parent directory comes before what is in it;
	// entries of a volume mounted inside another are left to that volume.
	for i := len(dests) - 1; i >= 0; i-- {
		if err := r.exportVolume(ctx, id, dests, dests[i], tw); err != nil {
			return fmt.Errorf("volume %s: %w", dests[i], err)
		}
	}
	return tw.Close()
}

func (r *Runtime) exportVolume(ctx context.Context, id string, dests []string, dest string, tw *tar.Writer) error {
	rc, _, err := r.c.CopyFromContainer(ctx, id, dest)
	if err != nil {
		return err
	}
	defer rc.Close()
	// The engine names entries from the volume's base name: "data/...".
	base := path.Base(dest)
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		rest, ok := strings.CutPrefix(h.Name, base+"/")
		rest = strings.TrimSuffix(rest, "/")
		if !ok || rest == "" {
			continue // the volume's own directory
		}
		h.Name = dest[1:] + "/" + rest
		if owner(dests, h.Name) != dest {
			continue // another volume's
		}
		if h.Typeflag == tar.TypeLink {
			if lr, ok := strings.CutPrefix(h.Linkname, base+"/"); ok {
				h.Linkname = dest[1:] + "/" + lr
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return err
		}
	}
}

// ImportVolumes writes a volume archive made by ExportVolumes into the
// volumes of container id (created, not yet started), keeping owners and
// modes. Entries under no volume of the container are skipped.
func (r *Runtime) ImportVolumes(ctx context.Context, id string, archive io.ReadSeeker) error {
	_, dests, err := r.volumes(ctx, id)
	if err != nil {
		return err
	}
	// One pass per volume: the engine extracts an archive into one
	// directory at a time, and into a volume even on a read-only root.
	for _, dest := range dests {
		if _, err := archive.Seek(0, io.SeekStart); err != nil {
			return err
		}
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(volumeEntries(archive, dests, dest, pw)) }()
		err := r.c.CopyToContainer(ctx, id, dest, pr, container.CopyToContainerOptions{CopyUIDGID: true})
		pr.CloseWithError(errors.New("import ended"))
		if err != nil {
			return fmt.Errorf("volume %s: %w", dest, err)
		}
	}
	return nil
}

// volumeEntries copies the entries of archive that belong to dest to w,
// named relative to dest.
func volumeEntries(archive io.Reader, dests []string, dest string, w io.Writer) error {
	tr := tar.NewReader(archive)
	tw := tar.NewWriter(w)
	prefix := dest[1:] + "/"
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return tw.Close()
		}
		if err != nil {
			return fmt.Errorf("volume archive: %w", err)
		}
		// Entries are clean paths inside dest, as export writes them; the
		// volume's own directory is not one.
		name := strings.TrimSuffix(h.Name, "/")
		if owner(dests, name) != dest || name == dest[1:] || path.Clean(name) != name {
			continue
		}
		h.Name = strings.TrimPrefix(h.Name, prefix)
		if h.Typeflag == tar.TypeLink {
			lr, ok := strings.CutPrefix(h.Linkname, prefix)
			if !ok || path.Clean(lr) != lr || lr == ".." || strings.HasPrefix(lr, "../") {
				continue // a hard link across volumes, or out of this one, cannot be made
			}
			h.Linkname = lr
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return err
		}
	}
}
