package docker_test

import (
	"archive/tar"
	"bytes"
	"context"
	"maps"
	"testing"
	"time"

	"github.com/enclaved/enclaved/internal/testenv"
)

// An archive with entries a volume cannot hold as named (the volume's
// own directory as a file, a name that is not a clean path, a hard link
// out of the volume) is imported without them: the other files arrive
// (found by FuzzVolumeEntries: the link failed the whole import, "data"
// became /data/data and "data//x" the absolute name "/x").
func TestImportSkipsEntriesOutsideVolumes(t *testing.T) {
	r := newRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ref := volumeImage(t, ctx, r, "/data", "/var/lib/app")
	id, err := r.Create(ctx, spec("enclaved-test-vol-hostile", ref, true))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Remove(context.Background(), id) })
	var in bytes.Buffer
	tw := tar.NewWriter(&in)
	for _, h := range []*tar.Header{
		{Name: "data/a", Typeflag: tar.TypeReg, Size: 1},
		{Name: "data", Typeflag: tar.TypeReg, Size: 1},
		{Name: "data//x", Typeflag: tar.TypeReg, Size: 1},
		{Name: "data/m", Typeflag: tar.TypeLink, Linkname: "data/../../etc/passwd"},
		{Name: "var/lib/app/c", Typeflag: tar.TypeReg, Size: 1},
	} {
		h.Mode = 0o644
		tw.WriteHeader(h)
		tw.Write(bytes.Repeat([]byte(h.Name[len(h.Name)-1:]), int(h.Size)))
	}
	tw.Close()
	if err := r.ImportVolumes(ctx, id, bytes.NewReader(in.Bytes())); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := r.ExportVolumes(ctx, id, &out); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"data/a": "a", "var/lib/app/c": "c"}
	if got := testenv.TarFiles(t, out.Bytes()); !maps.Equal(got, want) {
		t.Errorf("imported %v, want %v", got, want)
	}
}
