package docker_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"maps"
	"slices"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/enclaved/enclaved/deployer/docker"
	"github.com/enclaved/enclaved/internal/testenv"
)

func archive(t *testing.T, entries map[string]string) *bytes.Reader {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range slices.Sorted(maps.Keys(entries)) {
		if err := tw.WriteHeader(&tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: 0o640, Uid: 1000, Gid: 1000, Size: int64(len(entries[n]))}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(entries[n]))
	}
	tw.Close()
	return bytes.NewReader(buf.Bytes())
}

// A container's volumes go out as one archive and come back into a new
// container of the same image: each file into the volume it was in
// (nested ones included), nothing outside the volumes, owners kept.
func TestVolumesRoundTrip(t *testing.T) {
	r := newRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ref := volumeImage(t, ctx, r, "/data", "/data/sub", "/var/lib/app")
	create := func(name string) string {
		id, err := r.Create(ctx, spec(name, ref, true))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Remove(context.Background(), id) })
		return id
	}
	first := create("enclaved-test-vol-a")
	in := archive(t, map[string]string{
		"data/a": "A", "data/sub/b": "B", "var/lib/app/c": "C",
		"data/../../etc/evil": "E", "etc/outside": "O",
	})
	if err := r.ImportVolumes(ctx, first, in); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := r.ExportVolumes(ctx, first, &out); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"data/a": "A", "data/sub/b": "B", "var/lib/app/c": "C"}
	if got := testenv.TarFiles(t, out.Bytes()); !maps.Equal(got, want) {
		t.Fatalf("exported %v, want %v", got, want)
	}
	tr := tar.NewReader(bytes.NewReader(out.Bytes()))
	if h, err := tr.Next(); err != nil || h.Uid != 1000 || h.Mode&0o777 != 0o640 {
		t.Errorf("first entry %+v %v: owner or mode not kept", h, err)
	}

	second := create("enclaved-test-vol-b")
	if err := r.ImportVolumes(ctx, second, bytes.NewReader(out.Bytes())); err != nil {
		t.Fatal(err)
	}
	var again bytes.Buffer
	if err := r.ExportVolumes(ctx, second, &again); err != nil {
		t.Fatal(err)
	}
	if got := testenv.TarFiles(t, again.Bytes()); !maps.Equal(got, want) {
		t.Errorf("after the round trip: %v, want %v", got, want)
	}

	if err := r.ExportVolumes(ctx, "enclaved-test-vol-none", io.Discard); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("export of a missing container: %v, want fs.ErrNotExist", err)
	}
}

// A running container's volumes are exported while it is frozen and it
// runs on afterwards; a new container filled from them sees the data (hello
// counts its starts in /data).
func TestVolumesOfRunningContainer(t *testing.T) {
	imgs := testenv.Images(t)
	r := newRuntime(t)
	dc := testenv.Docker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := r.Pull(ctx, imgs.Hello.Ref, nil); err != nil {
		t.Fatal(err)
	}
	start := func(name string, vols []byte) string {
		id, err := r.Create(ctx, spec(name, imgs.Hello.Ref, false))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Remove(context.Background(), id) })
		if vols != nil {
			if err := r.ImportVolumes(ctx, id, bytes.NewReader(vols)); err != nil {
				t.Fatal(err)
			}
		}
		if err := r.Start(ctx, id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	id := start("enclaved-test-vol-run", nil)
	testenv.WaitLog(t, dc, id, "listening")
	var out bytes.Buffer
	if err := r.ExportVolumes(ctx, id, &out); err != nil {
		t.Fatal(err)
	}
	if got := testenv.TarFiles(t, out.Bytes()); got["data/starts"] != "1" {
		t.Fatalf("exported %v, want data/starts = 1", got)
	}
	if info, err := dc.ContainerInspect(ctx, id); err != nil || !info.State.Running || info.State.Paused {
		t.Fatalf("after the export: %+v %v; want it running, not frozen", info.State, err)
	}

	moved := start("enclaved-test-vol-moved", out.Bytes())
	testenv.WaitLog(t, dc, moved, "starts 2")

	// A container left frozen (the instance died during an export) is
	// thawed by Start.
	if err := dc.ContainerPause(ctx, moved); err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx, moved); err != nil {
		t.Fatal(err)
	}
	if info, err := dc.ContainerInspect(ctx, moved); err != nil || !info.State.Running || info.State.Paused {
		t.Errorf("Start of a frozen container: %+v %v", info.State, err)
	}
}

// BenchmarkExportVolumes measures a volume export through the engine's
// archive API: a created container whose volume holds one 32 MiB file.
func BenchmarkExportVolumes(b *testing.B) {
	r := newRuntime(b)
	ctx := context.Background()
	ref := volumeImage(b, ctx, r, "/data")
	id, err := r.Create(ctx, spec("enclaved-bench-volumes", ref, true))
	if err != nil {
		b.Fatal(err)
	}
	defer r.Remove(context.Background(), id)
	const size = 32 << 20
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "data/blob", Typeflag: tar.TypeReg, Mode: 0o600, Size: size})
	tw.Write(bytes.Repeat([]byte{7}, size))
	tw.Close()
	if err := r.ImportVolumes(ctx, id, bytes.NewReader(buf.Bytes())); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		if err := r.ExportVolumes(ctx, id, io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkExportRunningSmall measures the export of a running container
// with a tiny volume (hello's start counter): about how long a renter's
// program is frozen per backup.
func BenchmarkExportRunningSmall(b *testing.B) {
	imgs := testenv.Images(b)
	r := newRuntime(b)
	ctx := context.Background()
	if err := r.Pull(ctx, imgs.Hello.Ref, nil); err != nil {
		b.Fatal(err)
	}
	id, err := r.Create(ctx, spec("enclaved-bench-running", imgs.Hello.Ref, false))
	if err != nil {
		b.Fatal(err)
	}
	defer r.Remove(context.Background(), id)
	if err := r.Start(ctx, id); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		if err := r.ExportVolumes(ctx, id, io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}

// volumeImage pushes a scratch image declaring the given VOLUMEs to the
// local registry, pulls it into r and returns its reference.
func volumeImage(tb testing.TB, ctx context.Context, r *docker.Runtime, vols ...string) string {
	tb.Helper()
	cfg := v1.Config{Entrypoint: []string{"/x"}, Volumes: map[string]struct{}{}}
	for _, v := range vols {
		cfg.Volumes[v] = struct{}{}
	}
	img, err := testenv.ScratchImage(map[string][]byte{"x": []byte("x")}, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	pushed, err := testenv.Push(ctx, testenv.Registry(tb).Host+"/enclaved-test/volumes:latest", img)
	if err != nil {
		tb.Fatal(err)
	}
	if err := r.Pull(ctx, pushed.Ref, nil); err != nil {
		tb.Fatal(err)
	}
	return pushed.Ref
}
