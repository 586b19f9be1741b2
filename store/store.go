// Package store opens the enclave's SQLite database: the one open path used by
// production and by every test, so that pragmas and migrations are never
// skipped.
//
// It runs inside the enclave (trusted side); the file lives on the enclave's
// RAM disk and reaches the parent only inside encrypted backups.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	_ "github.com/mattn/go-sqlite3" // registers the "sqlite3" driver (cgo)

	"github.com/enclaved/enclaved/migrations"
)

// BusyTimeout is how long a connection waits on a locked database before
// SQLITE_BUSY.
const BusyTimeout = 5 * time.Second

// DB is the enclave database. It embeds *sql.DB for queries.
type DB struct {
	*sql.DB
	// Path is the database file.
	Path string
	// Version is the schema version after migrations ran.
	Version int
}

// Options tune Open. The zero value is what production uses.
type Options struct {
	// Now stamps migrations; defaults to time.Now.
	Now func() time.Time
}

// Open opens (creating if needed) the database at path with WAL, foreign
// keys, a busy timeout, full fsync and immediate write transactions, and
// applies the embedded migrations. It refuses a database whose schema is
// newer than this binary (migrations.ErrTooNew).
func Open(ctx context.Context, path string, opts Options) (*DB, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open db: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, fmt.Errorf("open db: %w", err)
	}
	q := url.Values{}
	q.Set("_journal_mode", "WAL")
	q.Set("_foreign_keys", "on")
	q.Set("_busy_timeout", fmt.Sprint(BusyTimeout.Milliseconds()))
	q.Set("_synchronous", "FULL")
	q.Set("_txlock", "immediate")
	dsn := (&url.URL{Scheme: "file", Path: abs, RawQuery: q.Encode()}).String()
	sqlDB, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, fmt.Errorf("open db %s: %w", abs, err)
	}
	if err := sqlDB.PingContext(ctx); err != nil {
		sqlDB.Close()
		return nil, fmt.Errorf("open db %s: %w", abs, err)
	}
	if err := os.Chmod(abs, 0o600); err != nil {
		sqlDB.Close()
		return nil, fmt.Errorf("open db %s: %w", abs, err)
	}
	v, err := migrations.Apply(ctx, sqlDB, opts.Now)
	if err != nil {
		sqlDB.Close()
		return nil, fmt.Errorf("open db %s: %w", abs, err)
	}
	return &DB{DB: sqlDB, Path: abs, Version: v}, nil
}

// OpenReadOnly opens an existing database for reading only (an operator's
// audit while the instance runs): nothing is created or migrated, and a
// database whose schema differs from this binary's is refused, as its
// tables would not mean what this binary reads them as.
func OpenReadOnly(ctx context.Context, path string) (*DB, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open db: %w", err)
	}
	if _, err := os.Stat(abs); err != nil {
		return nil, fmt.Errorf("open db: %w", err)
	}
	q := url.Values{}
	q.Set("mode", "ro")
	q.Set("_busy_timeout", fmt.Sprint(BusyTimeout.Milliseconds()))
	dsn := (&url.URL{Scheme: "file", Path: abs, RawQuery: q.Encode()}).String()
	sqlDB, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, fmt.Errorf("open db %s: %w", abs, err)
	}
	v, err := migrations.Version(ctx, sqlDB)
	if err == nil && v != migrations.Latest() {
		err = fmt.Errorf("schema version %d, this binary's is %d", v, migrations.Latest())
	}
	if err != nil {
		sqlDB.Close()
		return nil, fmt.Errorf("open db %s: %w", abs, err)
	}
	return &DB{DB: sqlDB, Path: abs, Version: v}, nil
}

// ErrNotFound is returned when a requested row does not exist.
var ErrNotFound = errors.New("not found")

// Meta returns the value stored under key in the meta table, or ErrNotFound.
func (db *DB) Meta(ctx context.Context, key string) (string, error) {
	var v string
	err := db.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?`, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("read meta %s: %w", key, err)
	}
	return v, nil
}

// SetMeta stores value under key, replacing any earlier value.
func (db *DB) SetMeta(ctx context.Context, key, value string) error {
	_, err := db.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES (?, ?)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value)
	if err != nil {
		return fmt.Errorf("write meta %s: %w", key, err)
	}
	return nil
}

// ErrOtherInstance is returned by ClaimInstance when the database was created
// by a different instance key.
var ErrOtherInstance = errors.New("database belongs to another instance")

// ClaimInstance binds the database to the instance public key (hex) on first
// use and refuses it afterwards for any other key, so that one data directory
// never mixes two instances' ledgers.
func (db *DB) ClaimInstance(ctx context.Context, pubkey string) error {
	_, err := db.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES ('instance_pubkey', ?)
		ON CONFLICT (key) DO NOTHING`, pubkey)
	if err != nil {
		return fmt.Errorf("claim database: %w", err)
	}
	got, err := db.Meta(ctx, "instance_pubkey")
	if err != nil {
		return fmt.Errorf("claim database: %w", err)
	}
	if got != pubkey {
		return fmt.Errorf("%w: it was created by instance %s, this is %s", ErrOtherInstance, got, pubkey)
	}
	return nil
}

// Strings runs query, which selects one text column, and returns its
// values in order.
func (db *DB) Strings(ctx context.Context, query string, args ...any) ([]string, error) {
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// Counts runs a query whose rows are (key, count), such as a GROUP BY
// with COUNT(*), and returns them as a map (a key with no rows is absent).
func (db *DB) Counts(ctx context.Context, query string, args ...any) (map[string]int64, error) {
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var k string
		var n int64
		if err := rows.Scan(&k, &n); err != nil {
			return nil, err
		}
		out[k] = n
	}
	return out, rows.Err()
}
