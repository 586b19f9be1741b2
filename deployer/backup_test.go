package deployer_test

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/backup"
	"github.com/enclaved/enclaved/deployer"
	"github.com/enclaved/enclaved/internal/testenv"
	"github.com/enclaved/enclaved/nip"
	"github.com/enclaved/enclaved/parent"
	"github.com/enclaved/enclaved/tunnel"
)

// fill writes a file of n bytes into the running container id's /data
// volume.
func (f *fixture) fill(t *testing.T, id string, n int) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "data/filler", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(n)})
	tw.Write(bytes.Repeat([]byte{'f'}, n))
	tw.Close()
	if err := f.rt.ImportVolumes(context.Background(), f.state(t, id).DockerID, bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
}

// A backup of three running containers on the real engine, with a parent
// that keeps blobs of at most 12 MiB: 0b's volumes hold more than its
// unit's disk (8 MiB, more than the image; the storage driver does not bound volumes), 0c's
// fit its two units' disk but not the parent's limit. Both are skipped, each owner
// is told why, and both are running afterwards (thawed, though their copy
// failed while they were frozen); 0a's volumes are in the recorded
// backup.
func TestBackupSkipsContainersWhoseVolumesFail(t *testing.T) {
	imgs := testenv.Images(t)
	f := newFixture(t, "inst-volume-skips", func(c *deployer.Config) { c.Unit.DiskBytes = 8 << 20 })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dc := testenv.Docker(t)
	const price = 3_600_000
	for id, units := range map[string]int64{"0a": 1, "0b": 1, "0c": 2} {
		f.quoted(t, id, imgs.Hello, true, units, price)
		f.pay(t, id, "pay-"+id, units*price)
		testenv.WaitHTTP(t, dc, f.state(t, id).DockerID, 8080, "(start 1)")
	}
	f.fill(t, "0b", 9<<20)
	f.fill(t, "0c", 13<<20)

	sec, err := backup.NewSecrets(nostr.GeneratePrivateKey())
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := nip.NewLocalKeys(sec.InstanceKey)
	ks := testenv.NewKeyStore(t)
	kc := ks.Client(ks.Attestor("build", "i-0123456789abcdef0"))
	if err := kc.Set(ctx, sec.Marshal(), nil, nil); err != nil {
		t.Fatal(err)
	}
	blobs := tunnel.Blobs{Link: testenv.ParentLink(t, &parent.Server{BlobDir: t.TempDir(), MaxBlob: 12 << 20, LogOut: io.Discard}, nil)}
	b := &backup.Backuper{DB: f.db, Blobs: blobs, Secrets: sec, Keys: keys, Mode: "dev", Dir: t.TempDir(), Now: f.clock.Now,
		Record: kc.RecordCheckpoint, Volumes: f.d,
		VolumesSkipped: func(ctx context.Context, s backup.VolumeSkip) { f.d.VolumesNotSaved(ctx, s.ID, s.Kept, s.Err) }}
	cp, err := b.Backup(ctx)
	if err != nil {
		t.Fatalf("the backup failed for one container's volumes: %v", err)
	}

	for _, id := range []string{"0b", "0c"} {
		if !f.running(t, id) {
			t.Errorf("%s is not running after the backup skipped it (left frozen?)", id)
		}
	}
	testenv.WaitHTTP(t, dc, f.state(t, "0b").DockerID, 8080, "(start 1)")
	if n := f.inbox.count("c-0b: its volumes were not backed up: the volumes of c-0b hold more than its disk of 8 MiB (1 unit(s)): not backed up until they fit. No backup holds them"); n != 1 {
		t.Errorf("0b's owner told %d times of its oversize volumes: %v", n, f.inbox.notices)
	}
	if n := f.inbox.count("c-0c: its volumes were not backed up: the copy failed (the instance's log says why)"); n != 1 {
		t.Errorf("0c's owner told %d times: %v", n, f.inbox.notices)
	}

	dir := t.TempDir()
	m, err := backup.Restore(ctx, blobs, sec, cp, filepath.Join(dir, "enclaved.db"), filepath.Join(dir, "volumes"))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Volumes) != 1 || m.Volumes[0].ID != "0a" {
		t.Fatalf("the backup names volumes %+v, want 0a's only", m.Volumes)
	}
	tarball, _ := os.ReadFile(filepath.Join(dir, "volumes", "0a.tar"))
	if got := testenv.TarFiles(t, tarball); got["data/starts"] != "1" {
		t.Errorf("0a's volumes restored as %v", got)
	}
}
