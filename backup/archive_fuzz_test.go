package backup

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"filippo.io/age"
	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/internal/testenv"
	"github.com/enclaved/enclaved/nip"
	"github.com/enclaved/enclaved/parent"
	"github.com/enclaved/enclaved/tunnel"
)

// maxFuzzTar bounds what a fuzzed tar may declare: a GNU sparse entry
// declares gigabytes of holes in a few bytes, and an archive's tar is
// only read once its hash matched a checkpoint the instance signed (the
// harness skips those, it does not look for them).
const maxFuzzTar = 1 << 20

// tarDeclares is the total size the entries of tr declare, or -1 when
// more than maxFuzzTar.
func tarDeclares(b []byte) int64 {
	var total int64
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err != nil {
			return total
		}
		if total += max(h.Size, 0); total > maxFuzzTar {
			return -1
		}
	}
}

// fuzzTar is a tar of files (name, contents) in order.
func fuzzTar(tb testing.TB, files ...string) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for i := 0; i+1 < len(files); i += 2 {
		if err := tw.WriteHeader(&tar.Header{Name: files[i], Mode: 0o600, Size: int64(len(files[i+1])), Typeflag: tar.TypeReg}); err != nil {
			tb.Fatal(err)
		}
		tw.Write([]byte(files[i+1]))
	}
	tw.Close()
	return b.Bytes()
}

func manifestJSON(m Manifest) string { b, _ := json.Marshal(m); return string(b) }

func encrypt(tb testing.TB, to age.Recipient, plain []byte) []byte {
	var b bytes.Buffer
	w, err := age.Encrypt(&b, to)
	if err != nil {
		tb.Fatal(err)
	}
	w.Write(plain)
	if err := w.Close(); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}

// archiveSeeds are archive tars as writeArchive makes them and variants.
func archiveSeeds(tb testing.TB, instance string, seq uint64) [][]byte {
	m := Manifest{Format: Format, Instance: instance, Seq: seq, CreatedAt: 1700000000000, Schema: 3}
	withVols := m
	withVols.Volumes = []VolumeRef{{ID: "ab", Blob: "vol-ab-a", SHA256: strings.Repeat("00", 32), Size: 10}}
	v1 := m
	v1.Format = 1
	return [][]byte{
		fuzzTar(tb, manifestName, manifestJSON(m), dbName, "SQLite format 3\x00"),
		fuzzTar(tb, manifestName, manifestJSON(withVols), dbName, "db"),
		fuzzTar(tb, manifestName, manifestJSON(v1), dbName, "db", "volumes/ab.tar", "vol", "volumes/../../x.tar", "x"),
		fuzzTar(tb, manifestName, manifestJSON(m), dbName, "a", dbName, "b"),
		fuzzTar(tb, dbName, "db", manifestName, manifestJSON(m)),
		fuzzTar(tb, manifestName, `{"format":3}`, dbName, "db"),
	}
}

func newSecrets(tb testing.TB) (Secrets, *age.X25519Identity) {
	sec, err := NewSecrets(nostr.GeneratePrivateKey())
	if err != nil {
		tb.Fatal(err)
	}
	id, _ := sec.identity()
	return sec, id
}

// FuzzReadArchive decrypts and unpacks fuzzed archives: the fuzzer's bytes
// as they come from the blob store, or as the tar inside a valid
// encryption to the instance's backup key. What readArchive accepts has a
// manifest of a known format and exactly the database the tar carries, and
// it writes nothing but the database and volume archives named ID.tar in
// the volume directory; bytes not encrypted to the key are refused as
// such.
func FuzzReadArchive(f *testing.F) {
	sec, id := newSecrets(f)
	for _, s := range archiveSeeds(f, sec.Pubkey(), 5) {
		f.Add(s, true)
		f.Add(encrypt(f, id.Recipient(), s), false)
	}
	other, _ := age.GenerateX25519Identity()
	f.Add(encrypt(f, other.Recipient(), archiveSeeds(f, sec.Pubkey(), 5)[0]), false)
	f.Add([]byte("age-encryption.org/v1\n-> X25519 AAAA\nAAAA\n--- AAAA\n"), false)
	f.Fuzz(func(t *testing.T, data []byte, encrypted bool) {
		blob := data
		if encrypted {
			if tarDeclares(data) < 0 {
				return
			}
			blob = encrypt(t, id.Recipient(), data)
		}
		dir := t.TempDir()
		dbPath, volDir := filepath.Join(dir, "db"), filepath.Join(dir, "vol")
		m, err := readArchive(bytes.NewReader(blob), id, dbPath, volDir)
		if !encrypted {
			if err == nil && !bytes.HasPrefix(blob, []byte("age-encryption.org/v1\n")) {
				t.Fatal("accepted bytes that are no age file")
			}
			return
		}
		if err != nil {
			if errors.Is(err, errNotOurs) || strings.HasPrefix(err.Error(), "not an age archive") {
				t.Fatalf("an archive encrypted to the key refused as %v", err)
			}
			return
		}
		if m.Format < 1 || m.Format > Format {
			t.Fatalf("accepted a manifest of format %d", m.Format)
		}
		// The database is the first one the tar carries.
		tr := tar.NewReader(bytes.NewReader(data))
		var want []byte
		for {
			h, err := tr.Next()
			if err != nil {
				t.Fatalf("accepted a tar without a database: %v", err)
			}
			if h.Name == dbName {
				want, _ = io.ReadAll(tr)
				break
			}
		}
		if got, err := os.ReadFile(dbPath); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("database of %d bytes written as %d: %v", len(want), len(got), err)
		}
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if e.Name() != "db" && e.Name() != "vol" {
				t.Fatalf("wrote %s", e.Name())
			}
		}
		vols, _ := os.ReadDir(volDir)
		for _, e := range vols {
			if !volumeName.MatchString(volumesDir+e.Name()) || m.Format != 1 {
				t.Fatalf("wrote volume archive %s from a format-%d archive", e.Name(), m.Format)
			}
		}
	})
}

// FuzzArchiveRoundTrip: whatever the manifest and the database hold,
// readArchive gives back what writeArchive wrote.
func FuzzArchiveRoundTrip(f *testing.F) {
	sec, id := newSecrets(f)
	f.Add(uint64(1), int64(1700000000000), 3, "ab", []byte("SQLite format 3\x00"))
	f.Add(uint64(1<<63), int64(-1), -1, "", []byte{})
	f.Add(uint64(0), int64(1<<62), 1<<30, "é\u2028<>&", bytes.Repeat([]byte{0}, 4096))
	f.Fuzz(func(t *testing.T, seq uint64, at int64, schema int, volID string, db []byte) {
		if !utf8.ValidString(volID) {
			return // JSON carries no invalid UTF-8 (ids are hex)
		}
		m := Manifest{Format: Format, Instance: sec.Pubkey(), Seq: seq, CreatedAt: at, Schema: schema}
		if volID != "" {
			m.Volumes = []VolumeRef{{ID: volID, Blob: "vol-" + volID + "-a", SHA256: volID, Size: at, At: at}}
		}
		dir := t.TempDir()
		src := filepath.Join(dir, "src.db")
		os.WriteFile(src, db, 0o600)
		var blob bytes.Buffer
		if err := writeArchive(&blob, id.Recipient(), m, src); err != nil {
			return // a time tar cannot hold
		}
		got, err := readArchive(bytes.NewReader(blob.Bytes()), id, filepath.Join(dir, "out.db"), filepath.Join(dir, "vol"))
		if err != nil {
			t.Fatalf("an archive writeArchive wrote is refused: %v", err)
		}
		want, _ := json.Marshal(m)
		if gb, _ := json.Marshal(got); !bytes.Equal(gb, want) {
			t.Fatalf("manifest %s read back as %s", want, gb)
		}
		if out, _ := os.ReadFile(filepath.Join(dir, "out.db")); !bytes.Equal(out, db) {
			t.Fatalf("database of %d bytes read back as %d", len(db), len(out))
		}
	})
}

// FuzzParseSecrets feeds what a key store may return as an instance's
// secrets to ParseSecrets: what it accepts is a valid Nostr key and age
// identity that survive Marshal, and neither its String nor any error
// carries the secrets.
func FuzzParseSecrets(f *testing.F) {
	sec, _ := newSecrets(f)
	f.Add(sec.Marshal())
	f.Add(`{"instance_key":"` + strings.ToUpper(sec.InstanceKey) + `","backup_key":"` + strings.ToLower(sec.BackupKey) + `"}`)
	f.Add(`{"instance_key":"` + sec.InstanceKey + `","backup_key":"` + sec.BackupKey + `","instance_key":"00"}`)
	f.Add(`{"instance_key":"` + strings.Repeat("f", 64) + `","backup_key":"AGE-SECRET-KEY-1"}`)
	f.Add(`{"instance_key":"` + strings.Repeat("0", 64) + `","backup_key":""}`)
	f.Add(`null`)
	f.Add(``)
	f.Fuzz(func(t *testing.T, data string) {
		s, err := ParseSecrets(data)
		if err != nil {
			if len(data) >= 16 && strings.Contains(err.Error(), data) {
				t.Fatalf("the error %q carries the input", err)
			}
			return
		}
		if len(s.InstanceKey) != 64 || s.Pubkey() == "" {
			t.Fatalf("accepted instance key %q", s.InstanceKey)
		}
		if _, err := s.identity(); err != nil {
			t.Fatalf("accepted backup key: %v", err)
		}
		again, err := ParseSecrets(s.Marshal())
		if err != nil || again != s {
			t.Fatalf("secrets do not survive Marshal: %v", err)
		}
		for _, printed := range []string{s.String(), s.GoString()} {
			if strings.Contains(strings.ToLower(printed), strings.ToLower(s.InstanceKey)) || strings.Contains(printed, s.BackupKey) {
				t.Fatalf("%q prints a secret", printed)
			}
		}
	})
}

// blobWorld is a parent's blob store reached over a link on 127.0.0.1.
func blobWorld(tb testing.TB) tunnel.Blobs {
	return tunnel.Blobs{Link: testenv.ParentLink(tb, &parent.Server{BlobDir: tb.TempDir(), LogOut: io.Discard}, nil)}
}

// put stores b at the parent, as the parent may have it.
func put(tb testing.TB, blobs Blobs, name string, b []byte) {
	if err := blobs.Put(context.Background(), name, bytes.NewReader(b)); err != nil {
		tb.Fatal(err)
	}
}

// FuzzRestore restores a fuzzed blob that the parent returns for the
// newest checkpoint: bytes as they come, or a tar encrypted to the
// instance's key; with the checkpoint naming their hash (as if the
// instance had made them), or another (the parent altered them). A blob
// that is not the checkpoint's is refused and leaves the database as it
// was; a restore that fails leaves nothing behind; one that succeeds
// loads the backup the checkpoint names.
//
// mode: bit 0 the checkpoint names another hash; bit 1 the bytes are a tar
// encrypted to the key.
func FuzzRestore(f *testing.F) {
	sec, id := newSecrets(f)
	blobs := blobWorld(f)
	const seq = 5
	for _, s := range archiveSeeds(f, sec.Pubkey(), seq) {
		for mode := range uint8(4) {
			f.Add(s, mode)
		}
	}
	f.Add(encrypt(f, id.Recipient(), archiveSeeds(f, sec.Pubkey(), seq)[0]), uint8(0))
	f.Add(encrypt(f, id.Recipient(), archiveSeeds(f, sec.Pubkey(), seq-1)[0]), uint8(1)) // a rollback
	f.Fuzz(func(t *testing.T, data []byte, mode uint8) {
		altered, encrypted := mode&1 != 0, mode&2 != 0
		blob := data
		if encrypted {
			if tarDeclares(data) < 0 {
				return
			}
			blob = encrypt(t, id.Recipient(), data)
		}
		if len(blob) == 0 {
			return // a checkpoint names a blob of at least a byte
		}
		sum := sha256.Sum256(blob)
		cp := nip.Checkpoint{Instance: sec.Pubkey(), Seq: seq, SHA256: hex.EncodeToString(sum[:]), Size: int64(len(blob)), Blob: Slots[0]}
		if altered {
			other := sha256.Sum256(append(blob, 0))
			cp.SHA256 = hex.EncodeToString(other[:])
		}
		put(t, blobs, cp.Blob, blob)
		dir, volDir := t.TempDir(), filepath.Join(t.TempDir(), "vol")
		dbPath := filepath.Join(dir, "enclaved.db")
		os.WriteFile(dbPath, []byte("before"), 0o600)
		m, err := Restore(context.Background(), blobs, sec, cp, dbPath, volDir)
		var re *RefusedError
		switch {
		case altered && !errors.As(err, &re):
			t.Fatalf("a blob that is not the checkpoint's gave %v", err)
		case err == nil && (m.Instance != cp.Instance || m.Seq != cp.Seq):
			t.Fatalf("restored backup %d of %s for checkpoint %d", m.Seq, m.Instance, cp.Seq)
		case err == nil && !encrypted && !bytes.HasPrefix(blob, []byte("age-encryption.org/v1\n")):
			t.Fatal("restored bytes that are no age file")
		}
		db, _ := os.ReadFile(dbPath)
		if err != nil && string(db) != "before" {
			t.Fatalf("a refused restore (%v) changed the database to %d bytes", err, len(db))
		}
		entries, _ := os.ReadDir(dir)
		if len(entries) != 1 {
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			t.Fatalf("a restore (%v) left %q", err, names)
		}
	})
}

// FuzzRestoreVolumes restores a fuzzed volume blob that the parent
// returns for a manifest's volume reference: raw, or encrypted to the
// instance's key (whole or cut short), with the reference naming its hash
// or another. A blob that is not the reference's, or that does not
// decrypt, is refused and leaves no volume archive; one that is, is the
// volume archive, byte for byte; nothing is left in the scratch
// directory.
//
// mode: bit 0 the reference names another hash; bit 1 the bytes are
// encrypted to the key; bit 2 the encryption is cut short by a byte.
func FuzzRestoreVolumes(f *testing.F) {
	_, id := newSecrets(f)
	blobs := blobWorld(f)
	for _, s := range [][]byte{fuzzTar(f, "data/a", "A", "data/sub/b", "B"), {}, bytes.Repeat([]byte{7}, 70<<10)} {
		for mode := range uint8(8) {
			f.Add(s, mode)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, mode uint8) {
		altered, encrypted, cut := mode&1 != 0, mode&2 != 0, mode&4 != 0
		blob := data
		if encrypted {
			blob = encrypt(t, id.Recipient(), data)
			if cut {
				blob = blob[:len(blob)-1]
			}
		}
		sum := sha256.Sum256(blob)
		ref := VolumeRef{ID: "ab", Blob: "vol-ab-a", SHA256: hex.EncodeToString(sum[:]), Size: int64(len(blob))}
		if altered {
			other := sha256.Sum256(append(blob, 0))
			ref.SHA256 = hex.EncodeToString(other[:])
		}
		put(t, blobs, ref.Blob, blob)
		tmp, volDir := t.TempDir(), filepath.Join(t.TempDir(), "vol")
		err := restoreVolumes(context.Background(), blobs, id, Manifest{Seq: 1, Volumes: []VolumeRef{ref}}, tmp, volDir)
		got, rerr := os.ReadFile(filepath.Join(volDir, "ab.tar"))
		var re *RefusedError
		switch {
		case err == nil && (altered || !encrypted || cut):
			t.Fatal("restored a volume blob that is not the reference's, or not whole")
		case err != nil && !errors.As(err, &re):
			t.Fatalf("refused with %T %v", err, err)
		case err == nil && !bytes.Equal(got, data):
			t.Fatalf("volume archive of %d bytes restored as %d", len(data), len(got))
		case err != nil && rerr == nil:
			t.Fatalf("a refused volume blob (%v) left a volume archive of %d bytes", err, len(got))
		}
		if left, _ := os.ReadDir(tmp); len(left) != 0 {
			t.Fatalf("%d files left in the scratch directory", len(left))
		}
	})
}
