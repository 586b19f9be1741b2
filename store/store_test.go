package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/enclaved/enclaved/migrations"
	"github.com/enclaved/enclaved/store"
)

func open(t *testing.T, path string) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestOpenSetsPragmasOnEveryConnection(t *testing.T) {
	db := open(t, filepath.Join(t.TempDir(), "a", "b", "enclaved.db"))
	db.SetMaxOpenConns(3)
	ctx := context.Background()
	// Hold several connections at once so the checks run on more than one.
	var conns []interface{ Close() error }
	for i := 0; i < 3; i++ {
		c, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		want := map[string]string{"journal_mode": "wal", "foreign_keys": "1", "busy_timeout": "5000", "synchronous": "2"}
		for pragma, w := range want {
			var got string
			if err := c.QueryRowContext(ctx, "PRAGMA "+pragma).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != w {
				t.Errorf("conn %d: PRAGMA %s = %q, want %q", i, pragma, got, w)
			}
		}
	}
	for _, c := range conns {
		c.Close()
	}
	fi, err := os.Stat(db.Path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("database file mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestReopenKeepsDataAndAppliesNothingTwice(t *testing.T) {
	path := filepath.Join(t.TempDir(), "enclaved.db")
	ctx := context.Background()
	db := open(t, path)
	if db.Version != migrations.Latest() {
		t.Fatalf("version %d, want %d", db.Version, migrations.Latest())
	}
	if err := db.SetMeta(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	db.Close()

	db = open(t, path)
	var rows int
	db.QueryRow(`SELECT COUNT(*) FROM schema_migrations`).Scan(&rows)
	if rows != migrations.Latest() {
		t.Errorf("%d rows in schema_migrations after reopen, want %d", rows, migrations.Latest())
	}
	if v, err := db.Meta(ctx, "k"); err != nil || v != "v" {
		t.Errorf("meta after reopen = %q, %v", v, err)
	}
	if _, err := db.Meta(ctx, "absent"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("missing meta: %v, want ErrNotFound", err)
	}
}

func TestRefusesDatabaseFromNewerBinary(t *testing.T) {
	path := filepath.Join(t.TempDir(), "enclaved.db")
	db := open(t, path)
	future := migrations.Latest() + 7
	if _, err := db.Exec(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, 'future', 0)`, future); err != nil {
		t.Fatal(err)
	}
	db.Close()

	_, err := store.Open(context.Background(), path, store.Options{})
	if !errors.Is(err, migrations.ErrTooNew) {
		t.Fatalf("open newer database: %v, want ErrTooNew", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, fmt.Sprint(future)) || !strings.Contains(msg, "newer") {
		t.Errorf("message should say the database is newer and name its version: %s", msg)
	}
}

func TestClaimInstance(t *testing.T) {
	ctx := context.Background()
	db := open(t, filepath.Join(t.TempDir(), "enclaved.db"))
	a, b := strings.Repeat("a", 64), strings.Repeat("b", 64)
	if err := db.ClaimInstance(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := db.ClaimInstance(ctx, a); err != nil {
		t.Fatalf("same instance again: %v", err)
	}
	err := db.ClaimInstance(ctx, b)
	if !errors.Is(err, store.ErrOtherInstance) || !strings.Contains(err.Error(), a) {
		t.Fatalf("other instance: %v, want ErrOtherInstance naming %s", err, a)
	}
}

// Concurrent writers wait for each other (busy timeout, immediate
// transactions) instead of failing with "database is locked".
func TestConcurrentWritersDoNotFail(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "enclaved.db")
	db1 := open(t, path)
	db2 := open(t, path) // a second pool, as a second process would have
	if _, err := db1.Exec(`CREATE TABLE counter (n INTEGER NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	db1.Exec(`INSERT INTO counter VALUES (0)`)
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for _, db := range []*store.DB{db1, db2} {
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 25; i++ {
					tx, err := db.BeginTx(ctx, nil)
					if err != nil {
						errs <- err
						return
					}
					var n int
					tx.QueryRow(`SELECT n FROM counter`).Scan(&n)
					if _, err := tx.Exec(`UPDATE counter SET n = ?`, n+1); err != nil {
						tx.Rollback()
						errs <- err
						return
					}
					if err := tx.Commit(); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var n int
	db1.QueryRow(`SELECT n FROM counter`).Scan(&n)
	if n != 200 {
		t.Errorf("counter = %d after 200 read-modify-write transactions: lost updates", n)
	}
}
