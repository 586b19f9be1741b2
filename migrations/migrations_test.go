package migrations_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/enclaved/enclaved/migrations"
	"github.com/enclaved/enclaved/store"
)

func TestEmbeddedMigrationsAreNumberedInOrder(t *testing.T) {
	ms, err := migrations.All()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 {
		t.Fatal("no migrations embedded")
	}
	for i, m := range ms {
		if m.Version != i+1 {
			t.Errorf("migration %d has version %d: versions must be 1, 2, 3, ... without gaps", i, m.Version)
		}
	}
	if got := migrations.Latest(); got != ms[len(ms)-1].Version {
		t.Errorf("Latest() = %d, want %d", got, ms[len(ms)-1].Version)
	}
}

// A migration that fails half way leaves neither its tables nor its version
// behind, and the ones before it stay applied.
func TestFailingMigrationRollsBack(t *testing.T) {
	ctx := context.Background()
	db, err := store.Open(ctx, filepath.Join(t.TempDir(), "db.sqlite"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ms, _ := migrations.All()
	base := ms[len(ms)-1].Version
	ms = append(ms,
		migrations.Migration{Version: base + 1, Name: "good", SQL: `CREATE TABLE good (x INTEGER)`},
		migrations.Migration{Version: base + 2, Name: "bad", SQL: `CREATE TABLE half (x INTEGER); INSERT INTO missing VALUES (1);`},
	)
	_, err = migrations.ApplyList(ctx, db.DB, ms, time.Now)
	if err == nil || !strings.Contains(err.Error(), "_bad") {
		t.Fatalf("want an error naming the bad migration, got %v", err)
	}
	v, err := migrations.Version(ctx, db.DB)
	if err != nil {
		t.Fatal(err)
	}
	if v != base+1 {
		t.Errorf("version after failure = %d, want %d", v, base+1)
	}
	var n int
	db.QueryRow(`SELECT COUNT(*) FROM sqlite_master WHERE name = 'half'`).Scan(&n)
	if n != 0 {
		t.Error("table from the failed migration exists: the migration was not rolled back")
	}
	db.QueryRow(`SELECT COUNT(*) FROM sqlite_master WHERE name = 'good'`).Scan(&n)
	if n != 1 {
		t.Error("table from the good migration is missing")
	}
}
