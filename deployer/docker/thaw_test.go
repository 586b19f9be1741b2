package docker_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/enclaved/enclaved/internal/testenv"
)

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// An export that fails while the container is frozen, because its writer
// refuses (a blob over a limit or a cap) or its context ends mid-copy (a
// blob past its deadline), thaws it all the same.
func TestExportThawsOnFailure(t *testing.T) {
	imgs := testenv.Images(t)
	r := newRuntime(t)
	dc := testenv.Docker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := r.Pull(ctx, imgs.Hello.Ref, nil); err != nil {
		t.Fatal(err)
	}
	id, err := r.Create(ctx, spec("enclaved-test-vol-thaw", imgs.Hello.Ref, false))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Remove(context.Background(), id) })
	if err := r.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	testenv.WaitLog(t, dc, id, "listening")
	thawed := func(after string) {
		t.Helper()
		if info, err := dc.ContainerInspect(ctx, id); err != nil || !info.State.Running || info.State.Paused {
			t.Fatalf("after %s: %+v %v; want it running, not frozen", after, info.State, err)
		}
	}

	refuse := writerFunc(func([]byte) (int, error) { return 0, errors.New("blob refused") })
	if err := r.ExportVolumes(ctx, id, refuse); err == nil || !strings.Contains(err.Error(), "blob refused") {
		t.Errorf("export into a refusing writer: %v", err)
	}
	thawed("an export whose writer failed")

	xctx, xcancel := context.WithCancel(ctx)
	ending := writerFunc(func(p []byte) (int, error) { xcancel(); return len(p), nil })
	r.ExportVolumes(xctx, id, ending)
	thawed("an export whose context ended")
}
