package backup_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/backup"
	"github.com/enclaved/enclaved/billing"
	"github.com/enclaved/enclaved/internal/testenv"
	"github.com/enclaved/enclaved/keystore"
	"github.com/enclaved/enclaved/nip"
	"github.com/enclaved/enclaved/parent"
	"github.com/enclaved/enclaved/records"
	"github.com/enclaved/enclaved/store"
	"github.com/enclaved/enclaved/tunnel"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// world is an instance's database and backuper, a parent holding its
// blobs over a link on 127.0.0.1, and a key store recording checkpoints.
type world struct {
	t       testing.TB
	db      *store.DB
	sec     backup.Secrets
	blobDir string // the parent's
	blobs   tunnel.Blobs
	ks      *keystore.Client
	b       *backup.Backuper
}

func newWorld(t testing.TB, opts ...func(*parent.Server)) *world {
	t.Helper()
	ctx := context.Background()
	w := &world{t: t, blobDir: t.TempDir()}
	srv := &parent.Server{BlobDir: w.blobDir, LogOut: io.Discard}
	for _, o := range opts {
		o(srv)
	}
	w.blobs = tunnel.Blobs{Link: testenv.ParentLink(t, srv, nil)}
	ks := testenv.NewKeyStore(t)
	var err error
	w.sec, err = backup.NewSecrets(nostr.GeneratePrivateKey())
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := nip.NewLocalKeys(w.sec.InstanceKey)
	w.ks = ks.Client(ks.Attestor("build", "i-0123456789abcdef0"))
	// The enclave's keys are in the key store: it may record checkpoints.
	if err := w.ks.Set(ctx, w.sec.Marshal(), nil, nil); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if w.db, err = store.Open(ctx, filepath.Join(dir, "enclaved.db"), store.Options{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.db.Close() })
	if err := w.db.ClaimInstance(ctx, w.sec.Pubkey()); err != nil {
		t.Fatal(err)
	}
	w.b = &backup.Backuper{DB: w.db, Blobs: w.blobs, Secrets: w.sec, Keys: keys, Mode: "dev", Dir: dir,
		Record: w.ks.RecordCheckpoint,
		Newest: func(ctx context.Context) (*nostr.Event, error) { return w.ks.NewestCheckpoint(ctx, w.sec.Pubkey()) }}
	return w
}

// credit adds a container and a credit of msat to it.
func (w *world) credit(name string, msat int64) {
	w.t.Helper()
	ctx := context.Background()
	id := fmt.Sprintf("%x", name)
	ok, err := records.New(w.db, time.Now).InsertQuote(ctx, records.NewQuote{ID: id, Name: name, Owner: "owner", Channel: "nip17",
		Image: "img", ImageRef: "img@sha256:00", ImageSize: 1, Units: 1, PriceMsat: 1000}, records.QuoteCaps{})
	if err != nil || !ok {
		w.t.Fatalf("quote %s: %v (recorded: %v)", name, err, ok)
	}
	invoices := &billing.Invoices{DB: w.db, Now: time.Now}
	if err := invoices.Record(ctx, billing.Request{ContainerID: id, Purpose: "topup", AmountMsat: msat},
		billing.Invoice{PaymentHash: "hash-" + name, Bolt11: "lnbc", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		w.t.Fatal(err)
	}
	if c, err := billing.NewLedger(w.db).ApplySettlement(ctx, billing.Settlement{PaymentHash: "hash-" + name, AmountMsat: msat, SettledAt: time.Now()}); err != nil || !c.Applied {
		w.t.Fatalf("credit %s: %+v %v", name, c, err)
	}
}

// newest is the key store's newest checkpoint of the instance.
func (w *world) newest() nip.Checkpoint {
	w.t.Helper()
	evt, err := w.ks.NewestCheckpoint(context.Background(), w.sec.Pubkey())
	if err != nil {
		w.t.Fatal(err)
	}
	cp, err := backup.Newest(w.sec.Pubkey(), evt)
	if err != nil || cp == nil {
		w.t.Fatalf("no newest checkpoint: %v", err)
	}
	return *cp
}

// restore restores the newest checkpoint into a fresh directory and
// opens it as the instance would.
func (w *world) restore(cp nip.Checkpoint) (*store.DB, error) {
	dir := w.t.TempDir()
	path := filepath.Join(dir, "enclaved.db")
	if _, err := backup.Restore(context.Background(), w.blobs, w.sec, cp, path, filepath.Join(dir, "volumes")); err != nil {
		return nil, err
	}
	db, err := store.Open(context.Background(), path, store.Options{})
	if err != nil {
		return nil, err
	}
	w.t.Cleanup(func() { db.Close() })
	return db, db.ClaimInstance(context.Background(), w.sec.Pubkey())
}

func balances(t testing.TB, db *store.DB) string {
	t.Helper()
	rows, err := db.Query(`SELECT c.name, SUM(l.amount_msat) FROM containers c JOIN ledger l ON l.container_id = c.id GROUP BY c.name ORDER BY c.name`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var name string
		var sum int64
		rows.Scan(&name, &sum)
		out = append(out, fmt.Sprintf("%s=%d", name, sum))
	}
	return strings.Join(out, " ")
}

// Backups alternate between two blobs; a restore brings back exactly the
// newest one's ledger, into a database the instance opens as its own.
func TestBackupAndRestore(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	w.credit("alpha", 21_000)
	cp1, err := w.b.Backup(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w.credit("beta", 5_000)
	cp2, err := w.b.Backup(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cp1.Seq != 1 || cp2.Seq != 2 || cp1.Blob == cp2.Blob {
		t.Fatalf("checkpoints %d %s, %d %s: want seqs 1, 2 in two blobs", cp1.Seq, cp1.Blob, cp2.Seq, cp2.Blob)
	}
	newest := w.newest()
	if newest.Seq != 2 || newest.SHA256 != cp2.SHA256 {
		t.Fatalf("key store's newest: %+v", newest)
	}
	db, err := w.restore(newest)
	if err != nil {
		t.Fatal(err)
	}
	if got := balances(t, db); got != "alpha=21000 beta=5000" {
		t.Errorf("restored ledger %q", got)
	}
	// The parent holds ciphertext only.
	raw, _ := os.ReadFile(filepath.Join(w.blobDir, cp2.Blob))
	if !strings.HasPrefix(string(raw), "age-encryption.org/v1") || strings.Contains(string(raw), "alpha") {
		t.Errorf("blob is not age ciphertext")
	}
	// The next instance run continues the sequence in the other slot.
	next := &backup.Backuper{DB: db, Blobs: w.blobs, Secrets: w.sec, Keys: mustKeys(t, w.sec), Dir: t.TempDir(), Record: w.ks.RecordCheckpoint, Last: &newest}
	cp3, err := next.Backup(ctx)
	if err != nil || cp3.Seq != 3 || cp3.Blob != cp1.Blob {
		t.Fatalf("after restore: %+v, %v", cp3, err)
	}
}

func mustKeys(t testing.TB, s backup.Secrets) *nip.LocalKeys {
	k, err := nip.NewLocalKeys(s.InstanceKey)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// The parent cannot make the instance load anything but the newest
// backup: an altered blob, another instance's blob, an older backup of
// its own and a missing blob are each refused, saying which.
func TestRestoreRefuses(t *testing.T) {
	w := newWorld(t)
	other := newWorld(t)
	ctx := context.Background()
	w.credit("alpha", 1_000)
	cp1, _ := w.b.Backup(ctx)
	w.credit("beta", 2_000)
	cp2, err := w.b.Backup(ctx)
	if err != nil {
		t.Fatal(err)
	}
	other.credit("gamma", 3_000)
	ocp, err := other.b.Backup(ctx)
	if err != nil {
		t.Fatal(err)
	}
	good, _ := os.ReadFile(filepath.Join(w.blobDir, cp2.Blob))
	older, _ := os.ReadFile(filepath.Join(w.blobDir, cp1.Blob))
	foreign, _ := os.ReadFile(filepath.Join(other.blobDir, ocp.Blob))
	flipped := append([]byte(nil), good...)
	flipped[len(flipped)/2] ^= 1
	refusesEach(t, filepath.Join(w.blobDir, cp2.Blob), func() error { _, err := w.restore(w.newest()); return err }, []swap{
		{"altered", flipped, "does not match checkpoint 2"},
		{"another instance's", foreign, "is not this instance's backup"},
		{"replayed older", older, "rollback: the parent returned backup 1, older than the newest checkpoint 2"},
		{"missing", nil, "backup 2 (blob " + cp2.Blob + ") is missing at the parent"},
	})
	// Put back, it loads.
	os.WriteFile(filepath.Join(w.blobDir, cp2.Blob), good, 0o600)
	if _, err := w.restore(w.newest()); err != nil {
		t.Errorf("the right blob: %v", err)
	}
	// Another instance's checkpoint is not ours to restore.
	if _, err := w.restore(ocp); err == nil || !strings.Contains(err.Error(), "not this instance") {
		t.Errorf("foreign checkpoint: %v", err)
	}
}

// swap is what the parent puts in a blob's place (nil: nothing), and the
// refusal a restore must answer with.
type swap struct {
	name string
	blob []byte
	want string
}

// refusesEach puts each swap's bytes at path and expects restore to refuse
// them, saying want.
func refusesEach(t *testing.T, path string, restore func() error, swaps []swap) {
	t.Helper()
	for _, c := range swaps {
		if c.blob == nil {
			os.Remove(path)
		} else if err := os.WriteFile(path, c.blob, 0o600); err != nil {
			t.Fatal(err)
		}
		err := restore()
		var re *backup.RefusedError
		if !errors.As(err, &re) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want refused with %q", c.name, err, c.want)
		}
	}
}

// Sync returns only once a backup holding what was committed before it is
// recorded; Changed alone leads to one within the delay.
func TestSyncAndChanged(t *testing.T) {
	w := newWorld(t)
	w.b.Delay = 50 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.b.Run(ctx) }()
	w.credit("alpha", 7_000)
	sctx, scancel := context.WithTimeout(ctx, time.Minute)
	defer scancel()
	if err := w.b.Sync(sctx); err != nil {
		t.Fatal(err)
	}
	if db, err := w.restore(w.newest()); err != nil || balances(t, db) != "alpha=7000" {
		t.Fatalf("after Sync: %v", err)
	}
	w.credit("beta", 1_000)
	w.b.Changed()
	testenv.Eventually(t, time.Minute, "a backup after Changed", func() bool { return w.newest().Seq >= 2 })
	if db, err := w.restore(w.newest()); err != nil || balances(t, db) != "alpha=7000 beta=1000" {
		t.Fatalf("after Changed: %v", err)
	}
	// Shutdown takes one more.
	w.credit("gamma", 1)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if db, err := w.restore(w.newest()); err != nil || balances(t, db) != "alpha=7000 beta=1000 gamma=1" {
		t.Fatalf("after shutdown: %v", err)
	}
}

// A checkpoint the key store recorded though its answer was lost: the
// next backup learns of it and does not overwrite the blob it names.
func TestLostRecordAnswer(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	lose := true
	w.b.Record = func(ctx context.Context, evt nostr.Event) error {
		err := w.ks.RecordCheckpoint(ctx, evt)
		if lose {
			lose = false
			return errors.New("no reply in time")
		}
		return err
	}
	vols := newVolumeSet(map[string]string{"0a": "first"})
	w.b.Volumes = vols
	w.credit("alpha", 1)
	if _, err := w.b.Backup(ctx); err == nil {
		t.Fatal("the lost answer should fail the backup")
	}
	recorded := w.newest()
	w.credit("beta", 2)
	vols.data["0a"] = "second"
	cp, err := w.b.Backup(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cp.Seq != recorded.Seq+1 || cp.Blob == recorded.Blob {
		t.Fatalf("next backup %d in %s after recorded %d in %s", cp.Seq, cp.Blob, recorded.Seq, recorded.Blob)
	}
	if db, err := w.restore(w.newest()); err != nil || balances(t, db) != "alpha=1 beta=2" {
		t.Fatalf("restore: %v", err)
	}
	// Nor the volume blob it names: had the second backup failed, the
	// recorded one would still load.
	if got, err := w.restoreVolumes(recorded); err != nil || got["0a.tar"] != "first" {
		t.Errorf("the recorded backup's volumes after the next backup: %v %v", got, err)
	}
	if got, err := w.restoreVolumes(cp); err != nil || got["0a.tar"] != "second" {
		t.Errorf("the next backup's volumes: %v %v", got, err)
	}
}

// Newest picks the highest seq and calls two different checkpoints with
// one seq a fork.
func TestNewest(t *testing.T) {
	sk := nostr.GeneratePrivateKey()
	pk, _ := nostr.GetPublicKey(sk)
	mk := func(seq uint64, hash string) *nostr.Event {
		e := nip.CheckpointEvent(nip.Checkpoint{Seq: seq, SHA256: strings.Repeat(hash, 64), Size: 1, Blob: "state-a"}, "dev", nostr.Timestamp(seq))
		e.Sign(sk)
		return &e
	}
	cp, err := backup.Newest(pk, mk(1, "a"), nil, mk(3, "b"), mk(2, "c"))
	if err != nil || cp.Seq != 3 {
		t.Fatalf("%+v %v", cp, err)
	}
	if cp, err := backup.Newest("other", mk(1, "a")); err != nil || cp != nil {
		t.Errorf("another instance's: %+v %v", cp, err)
	}
	if _, err := backup.Newest(pk, mk(3, "b"), mk(3, "d")); err == nil || !strings.Contains(err.Error(), "two different checkpoints 3") {
		t.Errorf("fork: %v", err)
	}
}

// fill gives the database n containers, each with an invoice, its credit
// and two metering debits. It writes the rows itself, in one transaction,
// where fixtures otherwise go through their tables' owners (credit): a
// database of 10,000 containers for benchmarks, built in a second.
func (w *world) fill(n int) {
	w.t.Helper()
	tx, err := w.db.Begin()
	if err != nil {
		w.t.Fatal(err)
	}
	now := time.Now().UnixMilli()
	for i := range n {
		id := fmt.Sprintf("%032x", i)
		hash := fmt.Sprintf("%064x", i)
		if _, err := tx.Exec(`INSERT INTO containers (id, name, owner, channel, image, image_ref, image_size, units, price_msat, state, balance_msat, pubkey, created_at, updated_at)
			VALUES (?, ?, ?, 'nip17', 'registry.example.com/app:latest', ?, 4096000, 2, 10000, 'running', 100000, ?, ?, ?)`,
			id, fmt.Sprintf("c%05d", i), strings.Repeat("ab", 32), "registry.example.com/app@sha256:"+hash, hash, now, now); err != nil {
			w.t.Fatal(err)
		}
		if _, err := tx.Exec(`INSERT INTO invoices (payment_hash, container_id, purpose, amount_msat, bolt11, expires_at, created_at, settled_at)
			VALUES (?, ?, 'deploy', 120000, ?, ?, ?, ?)`, hash, id, "lnbcrt1200n1"+strings.Repeat("q", 300), now/1000+600, now/1000, now/1000); err != nil {
			w.t.Fatal(err)
		}
		if _, err := tx.Exec(`INSERT INTO ledger (container_id, kind, amount_msat, payment_hash, at) VALUES (?, 'credit', 120000, ?, ?)`, id, hash, now); err != nil {
			w.t.Fatal(err)
		}
		for j := range 2 {
			if _, err := tx.Exec(`INSERT INTO ledger (container_id, kind, amount_msat, from_ms, to_ms, at) VALUES (?, 'debit', 10000, ?, ?, ?)`,
				id, now+int64(j)*60000, now+int64(j+1)*60000, now); err != nil {
				w.t.Fatal(err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		w.t.Fatal(err)
	}
}

// Backup and restore of a database of 10,000 containers (each with an
// invoice, a credit and two debits), through the parent's blob store over
// the link and the key store.
func BenchmarkBackup10k(b *testing.B) {
	w := newWorld(b)
	w.fill(10_000)
	var cp nip.Checkpoint
	b.ResetTimer()
	for b.Loop() {
		var err error
		if cp, err = w.b.Backup(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(cp.Size), "blob-bytes")
	fi, _ := os.Stat(w.db.Path)
	b.ReportMetric(float64(fi.Size()), "db-bytes")
}

func BenchmarkRestore10k(b *testing.B) {
	w := newWorld(b)
	w.fill(10_000)
	cp, err := w.b.Backup(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	b.ResetTimer()
	for b.Loop() {
		if _, err := backup.Restore(context.Background(), w.blobs, w.sec, cp, filepath.Join(dir, "enclaved.db"), filepath.Join(dir, "volumes")); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(cp.Size), "blob-bytes")
}

// volumeSet is the containers' volumes as the deployer would export them.
type volumeSet struct {
	data    map[string]string    // id → archive bytes; "" = gone
	idle    map[string]time.Time // containers not running, since when
	exports map[string]int       // copies taken, by id
	fail    map[string]error     // exports failing midway, by id
}

func newVolumeSet(data map[string]string) *volumeSet {
	return &volumeSet{data: data, idle: map[string]time.Time{}, exports: map[string]int{}, fail: map[string]error{}}
}

func (v *volumeSet) VolumeIDs(context.Context) ([]string, error) {
	return slices.Sorted(maps.Keys(v.data)), nil
}

func (v *volumeSet) Idle(_ context.Context, id string) (time.Time, bool) {
	t, ok := v.idle[id]
	return t, ok
}

func (v *volumeSet) ExportVolumes(_ context.Context, id string, w io.Writer) error {
	if v.data[id] == "" {
		return fmt.Errorf("container %s: %w", id, fs.ErrNotExist)
	}
	v.exports[id]++
	if err := v.fail[id]; err != nil {
		io.WriteString(w, v.data[id][:len(v.data[id])/2])
		return err
	}
	_, err := io.WriteString(w, v.data[id])
	return err
}

// restoreVolumes restores cp and returns the volume archives it left.
func (w *world) restoreVolumes(cp nip.Checkpoint) (map[string]string, error) {
	dir := w.t.TempDir()
	volDir := filepath.Join(dir, "volumes")
	os.MkdirAll(volDir, 0o700)
	os.WriteFile(filepath.Join(volDir, "ff.tar"), []byte("an earlier restore's"), 0o600)
	if _, err := backup.Restore(context.Background(), w.blobs, w.sec, cp, filepath.Join(dir, "enclaved.db"), volDir); err != nil {
		return nil, err
	}
	got := map[string]string{}
	entries, _ := os.ReadDir(volDir)
	for _, e := range entries {
		b, _ := os.ReadFile(filepath.Join(volDir, e.Name()))
		got[e.Name()] = string(b)
	}
	return got, nil
}

// A backup carries each kept container's volumes, in blobs of their own
// (ciphertext at the parent); a container removed while the backup ran
// is left out; a restore puts each archive in the volume directory as
// ID.tar, replacing what an earlier restore left.
func TestVolumesInBackup(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	big := strings.Repeat("v", 1<<20)
	w.b.Volumes = newVolumeSet(map[string]string{"0a": "tar of 0a", "0b": "", "0c": big})
	if _, err := w.b.Backup(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := w.restoreVolumes(w.newest())
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"0a.tar": "tar of 0a", "0c.tar": big}; !maps.Equal(got, want) {
		t.Errorf("restored volumes %d files %v, want 0a.tar and 0c.tar", len(got), slices.Sorted(maps.Keys(got)))
	}
	raw, _ := os.ReadFile(filepath.Join(w.blobDir, "vol-0a-a"))
	if !strings.HasPrefix(string(raw), "age-encryption.org/v1") || strings.Contains(string(raw), "tar of 0a") {
		t.Errorf("volume blob is not age ciphertext")
	}
}

// A running container's volumes are copied again only once their copy
// is VolumeEvery old, so it is not frozen at every backup; a stopped one
// once after it stopped; at shutdown every running one afresh. New copies
// go to the container's other blob; a removed container's blobs are
// emptied once no backup names them.
func TestVolumesCopiedWhenChanged(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	clock := testenv.NewClock(time.Unix(1_800_000_000, 0))
	w.b.Now, w.b.VolumeEvery = clock.Now, 10*time.Minute
	vols := newVolumeSet(map[string]string{"0a": "a1", "0b": "b1"})
	w.b.Volumes = vols
	backup := func(want map[string]string, exports map[string]int) {
		t.Helper()
		if _, err := w.b.Backup(ctx); err != nil {
			t.Fatal(err)
		}
		got, err := w.restoreVolumes(w.newest())
		if err != nil {
			t.Fatal(err)
		}
		if !maps.Equal(got, want) || !maps.Equal(vols.exports, exports) {
			t.Fatalf("restored %v after copies %v; want %v after %v", got, vols.exports, want, exports)
		}
	}
	backup(map[string]string{"0a.tar": "a1", "0b.tar": "b1"}, map[string]int{"0a": 1, "0b": 1})

	// A minute on, both still run and wrote: the backup names the copies
	// it has (a crash now loses that minute of writes, no more).
	clock.Add(time.Minute)
	vols.data["0a"], vols.data["0b"] = "a2", "b2"
	backup(map[string]string{"0a.tar": "a1", "0b.tar": "b1"}, map[string]int{"0a": 1, "0b": 1})

	// 0b stops: the next backup copies it once more, then never while it
	// stays stopped.
	clock.Add(time.Second)
	vols.idle["0b"] = clock.Now()
	clock.Add(time.Second)
	backup(map[string]string{"0a.tar": "a1", "0b.tar": "b2"}, map[string]int{"0a": 1, "0b": 2})
	clock.Add(time.Hour)
	vols.data["0a"] = "a3"
	backup(map[string]string{"0a.tar": "a3", "0b.tar": "b2"}, map[string]int{"0a": 2, "0b": 2})
	for _, name := range []string{"vol-0a-a", "vol-0a-b", "vol-0b-a", "vol-0b-b"} {
		if _, err := os.Stat(filepath.Join(w.blobDir, name)); err != nil {
			t.Errorf("blob %s: %v", name, err)
		}
	}

	// Shutdown (Run's context ends): the running one is copied afresh.
	clock.Add(time.Second)
	vols.data["0a"] = "a4"
	done, cancel := context.WithCancel(ctx)
	cancel()
	if err := w.b.Run(done); err != nil {
		t.Fatal(err)
	}
	if got, err := w.restoreVolumes(w.newest()); err != nil || got["0a.tar"] != "a4" || vols.exports["0b"] != 2 {
		t.Fatalf("after shutdown: %v %v, copies %v", got, err, vols.exports)
	}

	// 0a is removed: no backup names its volumes, and the parent no longer
	// holds them.
	delete(vols.data, "0a")
	backup(map[string]string{"0b.tar": "b2"}, map[string]int{"0a": 3, "0b": 2})
	for _, name := range []string{"vol-0a-a", "vol-0a-b"} {
		if fi, err := os.Stat(filepath.Join(w.blobDir, name)); err == nil && fi.Size() != 0 {
			t.Errorf("removed container's blob %s still holds %d bytes", name, fi.Size())
		}
	}
}

// The parent cannot swap a container's volumes: an altered volume blob,
// the container's older copy, and a missing one are each refused.
func TestRestoreRefusesVolumes(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	w.b.Volumes = newVolumeSet(map[string]string{"0a": "old data"})
	if _, err := w.b.Backup(ctx); err != nil {
		t.Fatal(err)
	}
	w.b.Volumes = newVolumeSet(map[string]string{"0a": "new data"})
	if _, err := w.b.Backup(ctx); err != nil {
		t.Fatal(err)
	}
	newest := filepath.Join(w.blobDir, "vol-0a-b")
	good, _ := os.ReadFile(newest)
	older, _ := os.ReadFile(filepath.Join(w.blobDir, "vol-0a-a"))
	flipped := append([]byte(nil), good...)
	flipped[len(flipped)-3] ^= 1
	refusesEach(t, newest, func() error { _, err := w.restoreVolumes(w.newest()); return err }, []swap{
		{"altered", flipped, "the volumes of container 0a (blob vol-0a-b) do not match backup 2"},
		{"older copy", older, "do not match backup 2"},
		{"missing", nil, "the volumes of container 0a (blob vol-0a-b) in backup 2 are missing at the parent"},
	})
	os.WriteFile(newest, good, 0o600)
	if got, err := w.restoreVolumes(w.newest()); err != nil || got["0a.tar"] != "new data" {
		t.Errorf("the right blobs: %v %v", got, err)
	}
}

// A backup of an instance with 20 running containers holding 8 MiB of
// volumes each: copying every volume at every backup, against naming the
// copies taken less than VolumeEvery ago (what most backups do).
func BenchmarkBackupWithVolumes(b *testing.B) {
	for _, c := range []struct {
		name  string
		every time.Duration
	}{{"copy-all", 0}, {"unchanged", time.Hour}} {
		b.Run(c.name, func(b *testing.B) {
			w := newWorld(b)
			w.fill(100)
			data := map[string]string{}
			for i := range 20 {
				data[fmt.Sprintf("%02x", i)] = strings.Repeat(string(rune('a'+i)), 8<<20)
			}
			w.b.Volumes, w.b.VolumeEvery = newVolumeSet(data), c.every
			if _, err := w.b.Backup(context.Background()); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for b.Loop() {
				if _, err := w.b.Backup(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
