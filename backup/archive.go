// Package backup keeps an instance's state across enclave restarts: it
// snapshots the SQLite database (SQLite's online backup API) into a tar
// with a manifest, encrypts it with age to the instance's backup key,
// stores it in the parent's blob store, and signs a checkpoint (sequence
// number, sha256, size) with the instance key that the key store records
// and the relays carry. Each container's volumes go to blobs of their own,
// copied again only when they may have changed; the manifest names each
// one with its sha256. A restore fetches the blob the newest checkpoint
// names, and the volume blobs its manifest names, and refuses anything
// else: a blob whose hash differs (tampered, another instance's) or an
// older one (a rollback).
//
// It runs inside the enclave. The parent sees only ciphertext, its size
// and when it changes; the backup key comes from the key store (package
// keystore) and is never written outside the enclave.
package backup

import (
	"archive/tar"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"filippo.io/age"
	"github.com/mattn/go-sqlite3"

	"github.com/enclaved/enclaved/store"
)

// Format is the archive format version in the manifest: 2 names volume
// blobs; 1 carried the volumes inside the archive (still read).
const Format = 2

// Names inside the archive.
const (
	manifestName = "manifest.json"
	dbName       = "enclaved.db"
	volumesDir   = "volumes/"
)

// MaxManifest bounds the manifest; MaxFile bounds any one file restored.
const (
	MaxManifest = 64 << 10
	MaxFile     = 8 << 30
)

// Manifest describes an archive; it is its first file.
type Manifest struct {
	Format    int    `json:"format"`
	Instance  string `json:"instance"` // hex pubkey
	Seq       uint64 `json:"seq"`
	CreatedAt int64  `json:"created_at"` // unix ms
	Schema    int    `json:"schema"`     // the database's migration version
	// Volumes are the containers' volume blobs that belong to this backup.
	Volumes []VolumeRef `json:"volumes,omitempty"`
}

// VolumeRef names one container's volumes at the parent: an age-encrypted
// tar in blob Blob, of Size bytes with sha256 SHA256, whose copy began at
// At (unix ms).
type VolumeRef struct {
	ID     string `json:"id"`
	Blob   string `json:"blob"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
	At     int64  `json:"at"`
}

// Volumes are the containers' volumes a backup keeps (the deployer); a
// restore leaves each container's archive in the volume directory as
// ID.tar, for the deployer to fill the container with again.
type Volumes interface {
	// VolumeIDs returns the ids of containers whose volumes are kept.
	VolumeIDs(ctx context.Context) ([]string, error)
	// Idle says since when container id has not run, so its volumes
	// have not changed (ok false: it may be running). A container still
	// waiting for the volumes a restore left is idle since the zero time.
	Idle(ctx context.Context, id string) (since time.Time, ok bool)
	// ExportVolumes writes container id's volumes as a tar to w; an
	// fs.ErrNotExist means the container is gone and is skipped.
	ExportVolumes(ctx context.Context, id string, w io.Writer) error
}

// Snapshot copies the live database at db to path with SQLite's online
// backup API: a consistent copy taken while writers go on.
func Snapshot(ctx context.Context, db *store.DB, path string) error {
	dst, err := sql.Open("sqlite3", "file:"+path)
	if err != nil {
		return err
	}
	defer dst.Close()
	dc, err := dst.Conn(ctx)
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	defer dc.Close()
	sc, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	defer sc.Close()
	err = dc.Raw(func(d any) error {
		return sc.Raw(func(s any) error {
			dconn, ok1 := d.(*sqlite3.SQLiteConn)
			sconn, ok2 := s.(*sqlite3.SQLiteConn)
			if !ok1 || !ok2 {
				return errors.New("not a go-sqlite3 connection")
			}
			bk, err := dconn.Backup("main", sconn, "main")
			if err != nil {
				return err
			}
			if _, err := bk.Step(-1); err != nil {
				bk.Finish()
				return err
			}
			return bk.Finish()
		})
	})
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	// One self-contained file: no WAL beside it.
	if _, err := dc.ExecContext(ctx, `PRAGMA journal_mode = DELETE`); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	return nil
}

// writeArchive writes the encrypted archive to w: the manifest, then the
// database snapshot at dbPath.
func writeArchive(w io.Writer, to age.Recipient, m Manifest, dbPath string) error {
	enc, err := age.Encrypt(w, to)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(enc)
	mb, _ := json.Marshal(m)
	at := time.UnixMilli(m.CreatedAt)
	if err := tw.WriteHeader(&tar.Header{Name: manifestName, Mode: 0o600, Size: int64(len(mb)), ModTime: at}); err != nil {
		return err
	}
	if _, err := tw.Write(mb); err != nil {
		return err
	}
	if err := addFile(tw, dbName, dbPath, at); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return enc.Close()
}

func addFile(tw *tar.Writer, name, path string, at time.Time) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: fi.Size(), ModTime: at}); err != nil {
		return err
	}
	_, err = io.Copy(tw, f)
	return err
}

var volumeName = regexp.MustCompile(`^volumes/[0-9a-f]{1,64}\.tar$`)

// readArchive decrypts the archive in r and writes its database to
// dbPath and its volume archives into volDir (one ID.tar each). It
// refuses any other file and anything over the size caps.
func readArchive(r io.Reader, id age.Identity, dbPath, volDir string) (Manifest, error) {
	var m Manifest
	dec, err := age.Decrypt(r, id)
	if err != nil {
		var nm *age.NoIdentityMatchError
		if errors.As(err, &nm) {
			return m, errNotOurs
		}
		return m, fmt.Errorf("not an age archive: %w", err)
	}
	tr := tar.NewReader(dec)
	sawDB := false
	for i := 0; ; i++ {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return m, fmt.Errorf("archive: %w", err)
		}
		if h.Typeflag != tar.TypeReg {
			return m, fmt.Errorf("archive: %q is not a regular file", h.Name)
		}
		switch {
		case i == 0:
			if h.Name != manifestName || h.Size > MaxManifest {
				return m, errors.New("archive: no manifest first")
			}
			b, err := io.ReadAll(io.LimitReader(tr, MaxManifest))
			if err != nil {
				return m, fmt.Errorf("archive: %w", err)
			}
			if err := json.Unmarshal(b, &m); err != nil || m.Format < 1 || m.Format > Format {
				return m, fmt.Errorf("archive: manifest is not format 1 to %d", Format)
			}
		case h.Name == dbName && !sawDB:
			sawDB = true
			if err := extract(tr, h.Size, dbPath); err != nil {
				return m, err
			}
		case m.Format == 1 && volumeName.MatchString(h.Name):
			if err := os.MkdirAll(volDir, 0o700); err != nil {
				return m, err
			}
			if err := extract(tr, h.Size, filepath.Join(volDir, strings.TrimPrefix(h.Name, volumesDir))); err != nil {
				return m, err
			}
		default:
			return m, fmt.Errorf("archive: unexpected file %q", h.Name)
		}
	}
	if !sawDB {
		return m, errors.New("archive: no database")
	}
	return m, nil
}

// errNotOurs: the archive is not encrypted to this instance's key.
var errNotOurs = errors.New("not encrypted to this instance's backup key")

func extract(r io.Reader, size int64, path string) error {
	if size < 0 || size > MaxFile {
		return fmt.Errorf("archive: %s of %d bytes", filepath.Base(path), size)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = io.CopyN(f, r, size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
