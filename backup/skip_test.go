package backup_test

import (
	"context"
	"errors"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enclaved/enclaved/backup"
	"github.com/enclaved/enclaved/internal/testenv"
	"github.com/enclaved/enclaved/parent"
)

// told collects what backups tell owners of skipped containers.
type told struct {
	mu    sync.Mutex
	skips []backup.VolumeSkip
}

func (o *told) tell(_ context.Context, s backup.VolumeSkip) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.skips = append(o.skips, s)
}

func (o *told) ids() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var ids []string
	for _, s := range o.skips {
		ids = append(ids, s.ID)
	}
	return ids
}

// One container whose volumes cannot be copied is skipped, not the
// backup: the backup names its last copy, the others' new copies go in,
// its owner is told once (with when the kept copy was taken), it is not
// frozen again at every backup but tried again after the interval, and
// once it copies it is in again. One that never copied is left out and
// its owner told that no backup holds it.
func TestVolumeFailureSkipsOnlyThatContainer(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	clock := testenv.NewClock(time.Unix(1_800_000_000, 0))
	owners := &told{}
	w.b.Now, w.b.Interval, w.b.VolumesSkipped = clock.Now, 10*time.Minute, owners.tell
	vols := newVolumeSet(map[string]string{"0a": "a1", "0b": "b1"})
	w.b.Volumes = vols
	backup := func(want map[string]string, exports map[string]int) {
		t.Helper()
		if _, err := w.b.Backup(ctx); err != nil {
			t.Fatalf("one container's failure failed the backup: %v", err)
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
	firstCopy := clock.Now()

	clock.Add(time.Minute)
	vols.data["0a"], vols.data["0b"], vols.data["0c"] = "a2", "b2", "c1"
	vols.fail["0b"] = errors.New("volume /data: no such volume")
	vols.fail["0c"] = errors.New("volume /data: no such volume")
	backup(map[string]string{"0a.tar": "a2", "0b.tar": "b1"}, map[string]int{"0a": 2, "0b": 2, "0c": 1})
	if got := owners.ids(); len(got) != 2 || got[0] != "0b" || got[1] != "0c" {
		t.Fatalf("owners told of %v, want 0b and 0c", got)
	}
	b, c := owners.skips[0], owners.skips[1]
	if !b.Kept.Equal(firstCopy.Truncate(time.Millisecond)) || !c.Kept.IsZero() || !strings.Contains(b.Err.Error(), "no such volume") {
		t.Errorf("told %+v and %+v", b, c)
	}

	// Within the interval the failing ones are not copied (nor frozen)
	// again, and nobody is told twice.
	clock.Add(time.Minute)
	vols.data["0a"] = "a3"
	backup(map[string]string{"0a.tar": "a3", "0b.tar": "b1"}, map[string]int{"0a": 3, "0b": 2, "0c": 1})
	clock.Add(10 * time.Minute)
	backup(map[string]string{"0a.tar": "a3", "0b.tar": "b1"}, map[string]int{"0a": 4, "0b": 3, "0c": 2})
	if n := len(owners.ids()); n != 2 {
		t.Errorf("owners told %d times, want 2", n)
	}

	// Fixed: copied again, and told anew should it fail later.
	delete(vols.fail, "0b")
	delete(vols.fail, "0c")
	clock.Add(10 * time.Minute)
	backup(map[string]string{"0a.tar": "a3", "0b.tar": "b2", "0c.tar": "c1"}, map[string]int{"0a": 5, "0b": 4, "0c": 3})
	vols.fail["0b"] = errors.New("disk on fire")
	clock.Add(time.Minute)
	backup(map[string]string{"0a.tar": "a3", "0b.tar": "b2", "0c.tar": "c1"}, map[string]int{"0a": 6, "0b": 5, "0c": 4})
	if got := owners.ids(); len(got) != 3 || got[2] != "0b" {
		t.Errorf("owners told of %v, want 0b again", got)
	}
}

// A container whose volumes are over the parent's blob limit is skipped
// at once (the parent resets the put), and the backup with the others'
// is recorded.
func TestVolumeOverBlobLimitSkipped(t *testing.T) {
	w := newWorld(t, func(s *parent.Server) { s.MaxBlob = 256 << 10 })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	owners := &told{}
	w.b.VolumesSkipped = owners.tell
	w.b.Volumes = newVolumeSet(map[string]string{"0a": "small", "0b": strings.Repeat("x", 4<<20)})
	if _, err := w.b.Backup(ctx); err != nil {
		t.Fatalf("backup: %v", err)
	}
	got, err := w.restoreVolumes(w.newest())
	if err != nil || !maps.Equal(got, map[string]string{"0a.tar": "small"}) {
		t.Fatalf("restored %v %v, want 0a only", got, err)
	}
	if len(owners.skips) != 1 || owners.skips[0].ID != "0b" || !strings.Contains(owners.skips[0].Err.Error(), "blob over 262144 bytes, the parent's limit") {
		t.Fatalf("owners told %+v", owners.skips)
	}
}

// A container stopped in the middle of its copy (the stop thaws it under
// the copy, which fails) is copied at the very next backup, not an
// interval later: a restart in between would otherwise bring back its
// volumes as they were before it last ran.
func TestVolumesCopiedOnceStoppedAfterAFailedCopy(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	clock := testenv.NewClock(time.Unix(1_800_000_000, 0))
	w.b.Now, w.b.Interval, w.b.VolumesSkipped = clock.Now, 10*time.Minute, (&told{}).tell
	vols := newVolumeSet(map[string]string{"0a": "a1"})
	w.b.Volumes = vols
	if _, err := w.b.Backup(ctx); err != nil {
		t.Fatal(err)
	}
	clock.Add(time.Minute)
	vols.data["0a"] = "a2"
	vols.fail["0a"] = errors.New("thawing container 0a: is not paused")
	if _, err := w.b.Backup(ctx); err != nil {
		t.Fatal(err)
	}
	// It stopped while that copy ran; its volumes no longer change.
	clock.Add(time.Second)
	vols.idle["0a"] = clock.Now()
	delete(vols.fail, "0a")
	if _, err := w.b.Backup(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := w.restoreVolumes(w.newest())
	if err != nil || !maps.Equal(got, map[string]string{"0a.tar": "a2"}) || vols.exports["0a"] != 3 {
		t.Fatalf("restored %v %v after %d copies; want a2 after 3", got, err, vols.exports["0a"])
	}
}
