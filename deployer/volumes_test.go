package deployer_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/enclaved/enclaved/deployer"
	"github.com/enclaved/enclaved/internal/testenv"
	"github.com/enclaved/enclaved/records"
)

// After an enclave restart the runtime has none of the containers, and a
// restore left their volumes in RestoreDir: backups taken meanwhile keep
// those archives; the running container is created again with its data
// and runs; the stopped one and the paused one (its balance ran out) are
// created again, not started, and run with their data when their owner
// starts one and a top-up resumes the other. hello counts its starts in
// its /data volume.
func TestVolumesAfterRestore(t *testing.T) {
	imgs := testenv.Images(t)
	restore := filepath.Join(t.TempDir(), "restore")
	f := newFixture(t, "inst-volumes", func(c *deployer.Config) { c.RestoreDir = restore })
	ctx := context.Background()
	dc := testenv.Docker(t)
	const price = 3_600_000
	// idle is what backups learn of whether a container's volumes may
	// have changed: ok false while it runs.
	idle := func(id string, wantOK bool, wantSince time.Time) {
		t.Helper()
		if since, ok := f.d.Idle(ctx, id); ok != wantOK || !since.Equal(wantSince) {
			t.Errorf("%s idle %v since %s, want %v since %s", id, ok, since, wantOK, wantSince)
		}
	}
	for id, hours := range map[string]int64{"run": 2, "halt": 2, "tired": 1} {
		f.quoted(t, id, imgs.Hello, true, 1, price)
		f.pay(t, id, "pay-"+id, hours*price)
		testenv.WaitHTTP(t, dc, f.state(t, id).DockerID, 8080, "(start 1)")
		idle(id, false, time.Time{})
	}
	f.quoted(t, "plain", imgs.ExitAfter, false, 1, price) // no volumes, never paid
	f.clock.Add(61 * time.Minute)
	if _, err := f.d.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if r := f.state(t, "tired"); r.State != records.StatePaused {
		t.Fatalf("tired after its hour: %s", r.State)
	}
	idle("tired", true, f.clock.Now())

	ids, err := f.d.VolumeIDs(ctx)
	if err != nil || !slices.Equal(ids, []string{"halt", "run", "tired"}) {
		t.Fatalf("volume ids %v %v, want [halt run tired]", ids, err)
	}
	f.clock.Add(time.Second)
	if err := f.owner(t, "halt", deployer.CommandStop); err != nil {
		t.Fatal(err)
	}
	idle("halt", true, f.clock.Now())
	// What a restore leaves: each container's volumes as ID.tar.
	os.MkdirAll(restore, 0o700)
	for _, id := range ids {
		var b bytes.Buffer
		if err := f.d.ExportVolumes(ctx, id, &b); err != nil {
			t.Fatal(err)
		}
		if got := testenv.TarFiles(t, b.Bytes()); got["data/starts"] != "1" {
			t.Fatalf("%s exported %v, want data/starts = 1", id, got)
		}
		os.WriteFile(filepath.Join(restore, id+".tar"), b.Bytes(), 0o600)
	}
	os.WriteFile(filepath.Join(restore, "plain.tar"), []byte("stale"), 0o600)
	// The enclave restarts: its engine holds nothing.
	oldRun := f.state(t, "run").DockerID
	for _, id := range ids {
		if err := f.rt.Remove(ctx, f.state(t, id).DockerID); err != nil {
			t.Fatal(err)
		}
	}
	var b bytes.Buffer
	if err := f.d.ExportVolumes(ctx, "halt", &b); err != nil || testenv.TarFiles(t, b.Bytes())["data/starts"] != "1" {
		t.Fatalf("a backup before the containers are back lost the restored volumes: %v", err)
	}
	idle("run", true, time.Time{}) // holds the copy the backup names

	if err := f.d.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	run := f.state(t, "run")
	if run.State != records.StateRunning || run.DockerID == oldRun || !f.running(t, "run") {
		t.Fatalf("run after reconcile: %s on %s (was %s), running %v", run.State, run.DockerID, oldRun, f.running(t, "run"))
	}
	testenv.WaitHTTP(t, dc, run.DockerID, 8080, "(start 2)")
	if halt := f.state(t, "halt"); halt.State != records.StateStopped || f.running(t, "halt") {
		t.Fatalf("halt after reconcile: %s, running %v; want stopped", halt.State, f.running(t, "halt"))
	}
	if tired := f.state(t, "tired"); tired.State != records.StatePaused || f.running(t, "tired") {
		t.Fatalf("tired after reconcile: %s, running %v; want paused", tired.State, f.running(t, "tired"))
	}
	idle("run", false, time.Time{})
	idle("halt", true, time.Time{}) // created again from the named copy, not run since
	idle("tired", true, time.Time{})
	f.pay(t, "tired", "topup-tired", price)
	if !f.running(t, "tired") {
		t.Fatalf("a top-up did not resume the paused container: %s", f.state(t, "tired").State)
	}
	testenv.WaitHTTP(t, dc, f.state(t, "tired").DockerID, 8080, "(start 2)")
	idle("tired", false, time.Time{})
	entries, _ := os.ReadDir(restore)
	if len(entries) != 0 {
		t.Errorf("restored archives left after reconcile: %v", entries)
	}
	b.Reset()
	if err := f.d.ExportVolumes(ctx, "halt", &b); err != nil || testenv.TarFiles(t, b.Bytes())["data/starts"] != "1" {
		t.Fatalf("the stopped container's volumes after it was created again: %v %v", testenv.TarFiles(t, b.Bytes()), err)
	}
	if err := f.d.Resume(ctx, "halt"); err != nil {
		t.Fatal(err)
	}
	testenv.WaitHTTP(t, dc, f.state(t, "halt").DockerID, 8080, "(start 2)")

	// A resume finds its container gone (and no restored volumes): it is
	// created again, with empty volumes, rather than failing.
	f.owner(t, "halt", deployer.CommandStop)
	f.rt.Remove(ctx, f.state(t, "halt").DockerID)
	if err := f.d.Resume(ctx, "halt"); err != nil {
		t.Fatal(err)
	}
	if !f.running(t, "halt") {
		t.Fatal("resumed container not running")
	}
	testenv.WaitHTTP(t, dc, f.state(t, "halt").DockerID, 8080, "(start 1)")
}
