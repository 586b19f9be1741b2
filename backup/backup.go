package backup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/nip"
	"github.com/enclaved/enclaved/store"
)

// Blobs is the parent's blob store (tunnel.Blobs over the link).
type Blobs interface {
	Put(ctx context.Context, name string, r io.Reader) error
	// Get returns an error wrapping os.ErrNotExist for a missing blob.
	Get(ctx context.Context, name string) (io.ReadCloser, error)
}

// Slots are the two blob names backups alternate between: a new backup
// never overwrites the one the newest recorded checkpoint names.
var Slots = [2]string{"state-a", "state-b"}

// Backuper takes backups: after changes (within Delay), every Interval,
// at Sync and at shutdown. A backup counts once its checkpoint is
// recorded by the key store (Record); the relays get it after (Publish).
type Backuper struct {
	DB      *store.DB
	Blobs   Blobs
	Secrets Secrets
	Keys    nostr.Keyer // the instance key; signs checkpoints
	Mode    string      // the t tag: dev, debug, prod
	// Record has the key store record a checkpoint; it must succeed for
	// the backup to count. Newest asks the key store for the newest it
	// recorded, after a Record whose outcome is unknown.
	Record func(ctx context.Context, evt nostr.Event) error
	Newest func(ctx context.Context) (*nostr.Event, error)
	// Publish sends a recorded checkpoint to the relays (best effort).
	Publish func(ctx context.Context, evt nostr.Event) error
	Volumes Volumes // nil: the database only
	// VolumeEvery: a running container's volumes are copied again once
	// their last copy is this old (0: at every backup); a stopped one's
	// once after it stopped; at shutdown, every running one's.
	VolumeEvery time.Duration
	// VolumesSkipped (optional) tells a container's owner that a recorded
	// backup could not copy its volumes, once when that starts happening
	// (see saveVolumes).
	VolumesSkipped func(ctx context.Context, s VolumeSkip)
	// Dir holds the snapshot while it is encrypted (in the enclave).
	Dir      string
	Delay    time.Duration // after Changed, at most this long (default 2 s)
	Interval time.Duration // a backup at least this often (default 10 min)
	Now      func() time.Time
	Log      *slog.Logger
	// Observe (optional) is told of every backup tried: how long it took
	// and its error (nil: recorded).
	Observe func(took time.Duration, err error)
	// Last is the newest recorded checkpoint at start (the one restored
	// from); nil on a first boot. LastVolumes are the volume blobs its
	// manifest names.
	Last        *nip.Checkpoint
	LastVolumes []VolumeRef

	one       sync.Mutex // one backup at a time
	mu        sync.Mutex
	attempted uint64 // the highest seq tried; never reused
	uncertain bool   // a Record failed: ask Newest before the next
	lastAt    nostr.Timestamp
	due       time.Time
	requested uint64
	done      uint64
	doneCh    chan struct{}
	changed   chan struct{}
	// vols are the volume blobs the newest recorded checkpoint names;
	// tried those of the attempt whose record's outcome is unknown.
	vols      map[string]VolumeRef
	triedSeq  uint64
	triedVols map[string]VolumeRef
	// failed are the containers whose volumes the recorded backups could
	// not copy lately, and when they were last tried (under one).
	failed map[string]time.Time
}

func (b *Backuper) init() {
	if b.changed != nil {
		return
	}
	if b.Now == nil {
		b.Now = time.Now
	}
	if b.Log == nil {
		b.Log = slog.New(slog.DiscardHandler)
	}
	if b.Delay <= 0 {
		b.Delay = 2 * time.Second
	}
	if b.Interval <= 0 {
		b.Interval = 10 * time.Minute
	}
	b.changed, b.doneCh = make(chan struct{}, 1), make(chan struct{})
	b.vols, b.failed = map[string]VolumeRef{}, map[string]time.Time{}
	for _, r := range b.LastVolumes {
		b.vols[r.ID] = r
	}
	if b.Last != nil {
		b.attempted = b.Last.Seq
		if b.Last.Event != nil {
			b.lastAt = b.Last.Event.CreatedAt
		}
	}
}

// Changed asks for a backup within Delay: after a money event.
func (b *Backuper) Changed() { b.schedule(b.Delay) }

func (b *Backuper) schedule(after time.Duration) uint64 {
	b.mu.Lock()
	b.init()
	b.requested++
	g := b.requested
	if at := time.Now().Add(after); b.due.IsZero() || at.Before(b.due) {
		b.due = at
	}
	b.mu.Unlock()
	select {
	case b.changed <- struct{}{}:
	default:
	}
	return g
}

// Sync returns once a backup holding everything committed before the call
// is recorded: an invoice is handed out only after it is saved.
func (b *Backuper) Sync(ctx context.Context) error {
	g := b.schedule(0)
	for {
		b.mu.Lock()
		done, ch := b.done, b.doneCh
		b.mu.Unlock()
		if done >= g {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("state not saved yet: %w", ctx.Err())
		}
	}
}

// Run takes backups until ctx ends, then one last one (within 30 s).
func (b *Backuper) Run(ctx context.Context) error {
	b.mu.Lock()
	b.init()
	b.mu.Unlock()
	tick := time.NewTicker(b.Interval)
	defer tick.Stop()
	backoff := time.Second
	for {
		b.mu.Lock()
		due := b.due
		b.mu.Unlock()
		var fire <-chan time.Time
		var timer *time.Timer
		if !due.IsZero() {
			timer = time.NewTimer(time.Until(due))
			fire = timer.C
		}
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return b.final()
		case <-b.changed:
		case <-tick.C:
			b.schedule(0)
		case <-fire:
			b.mu.Lock()
			g := b.requested
			b.due = time.Time{}
			b.mu.Unlock()
			if _, err := b.Backup(ctx); err != nil {
				if ctx.Err() != nil {
					return b.final()
				}
				b.Log.Warn("backup failed; retrying", "err", err, "in", backoff)
				b.mu.Lock()
				if at := time.Now().Add(backoff); b.due.IsZero() || at.Before(b.due) {
					b.due = at
				}
				b.mu.Unlock()
				backoff = min(2*backoff, 30*time.Second)
			} else {
				backoff = time.Second
				b.mu.Lock()
				b.done = max(b.done, g)
				close(b.doneCh)
				b.doneCh = make(chan struct{})
				b.mu.Unlock()
			}
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// final is the shutdown backup.
func (b *Backuper) final() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := b.backup(ctx, true); err != nil {
		return fmt.Errorf("backup at shutdown: %w", err)
	}
	return nil
}

// Backup takes one backup now and returns its recorded checkpoint.
func (b *Backuper) Backup(ctx context.Context) (nip.Checkpoint, error) { return b.backup(ctx, false) }

func (b *Backuper) backup(ctx context.Context, final bool) (nip.Checkpoint, error) {
	b.one.Lock()
	defer b.one.Unlock()
	start := time.Now()
	cp, err := b.attempt(ctx, final)
	if b.Observe != nil {
		b.Observe(time.Since(start), err)
	}
	return cp, err
}

// Recorded is the newest recorded checkpoint: when it was signed and the
// size of its blob; ok is false before the first.
func (b *Backuper) Recorded() (at time.Time, size int64, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.Last == nil || b.Last.Event == nil {
		return time.Time{}, 0, false
	}
	return b.Last.Event.CreatedAt.Time(), b.Last.Size, true
}

// attempt takes one backup; b.one is held.
func (b *Backuper) attempt(ctx context.Context, final bool) (nip.Checkpoint, error) {
	b.mu.Lock()
	b.init()
	uncertain := b.uncertain
	b.mu.Unlock()
	if uncertain && b.Newest != nil {
		// Learn whether the unanswered record went through, so the next
		// backup goes to the slot the newest checkpoint does not name.
		evt, err := b.Newest(ctx)
		if err != nil {
			return nip.Checkpoint{}, fmt.Errorf("newest checkpoint: %w", err)
		}
		if evt != nil {
			cp, err := nip.ParseCheckpoint(evt)
			if err != nil || cp.Instance != b.Secrets.Pubkey() {
				return nip.Checkpoint{}, errors.New("the key store's newest checkpoint is not this instance's")
			}
			b.mu.Lock()
			if b.Last == nil || cp.Seq > b.Last.Seq {
				vols := b.triedVols
				if cp.Seq != b.triedSeq {
					// A record that arrived late: which volume blobs it
					// names is unknown, so every container is copied
					// afresh.
					b.Log.Warn("the key store's newest checkpoint is not the attempt this process knows of", "seq", cp.Seq, "tried", b.triedSeq)
					vols = nil
				}
				b.Last, b.vols = &cp, vols
				b.lastAt = max(b.lastAt, evt.CreatedAt)
			}
			b.mu.Unlock()
		}
		b.mu.Lock()
		b.uncertain = false
		b.mu.Unlock()
	}
	b.mu.Lock()
	b.attempted++
	seq := b.attempted
	name := Slots[0]
	if b.Last != nil && b.Last.Blob == Slots[0] {
		name = Slots[1]
	}
	at := max(nostr.Timestamp(b.Now().Unix()), b.lastAt+1)
	b.mu.Unlock()

	start := time.Now()
	id, err := b.Secrets.identity()
	if err != nil {
		return nip.Checkpoint{}, err
	}
	snap := filepath.Join(b.Dir, ".backup-snapshot.db")
	os.Remove(snap)
	defer os.Remove(snap)
	if err := Snapshot(ctx, b.DB, snap); err != nil {
		return nip.Checkpoint{}, err
	}
	var vols map[string]VolumeRef
	var run volumeRun
	if b.Volumes != nil {
		if run, err = b.saveVolumes(ctx, id.Recipient(), final); err != nil {
			return nip.Checkpoint{}, err
		}
		vols = run.refs
	}
	m := Manifest{Format: Format, Instance: b.Secrets.Pubkey(), Seq: seq, CreatedAt: b.Now().UnixMilli(), Schema: b.DB.Version,
		Volumes: sortedRefs(vols)}
	h := sha256.New()
	var size countWriter
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(writeArchive(io.MultiWriter(pw, h, &size), id.Recipient(), m, snap))
	}()
	err = b.Blobs.Put(ctx, name, pr)
	pr.CloseWithError(errors.New("put ended"))
	if err != nil {
		return nip.Checkpoint{}, fmt.Errorf("store blob %s: %w", name, err)
	}
	cp := nip.Checkpoint{Instance: m.Instance, Seq: seq, SHA256: hex.EncodeToString(h.Sum(nil)), Size: int64(size), Blob: name}
	evt := nip.CheckpointEvent(cp, b.Mode, at)
	if err := b.Keys.SignEvent(ctx, &evt); err != nil {
		return nip.Checkpoint{}, err
	}
	cp.Event = &evt
	if err := b.Record(ctx, evt); err != nil {
		b.mu.Lock()
		b.uncertain = true
		b.triedSeq, b.triedVols = seq, vols
		b.mu.Unlock()
		return nip.Checkpoint{}, fmt.Errorf("record checkpoint %d: %w", seq, err)
	}
	b.mu.Lock()
	b.Last, b.lastAt = &cp, at
	before := b.vols
	if b.Volumes != nil {
		b.vols = vols
	}
	b.mu.Unlock()
	if b.Volumes != nil {
		b.dropVolumes(ctx, before, vols)
		b.volumesRecorded(ctx, run)
	}
	b.Log.Info("backup saved", "seq", seq, "blob", name, "bytes", cp.Size, "took", time.Since(start).Round(time.Millisecond))
	if b.Publish != nil {
		if err := b.Publish(ctx, evt); err != nil {
			b.Log.Warn("checkpoint not published to the relays", "seq", seq, "err", err)
		}
	}
	return cp, nil
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) { *c += countWriter(len(p)); return len(p), nil }

// RefusedError is a backup a restore would not load, and why.
type RefusedError struct{ Reason string }

func (e *RefusedError) Error() string { return "backup refused: " + e.Reason }

// Newest picks the newest checkpoint of instance among events (from the
// key store and the relays); nil if there is none. Two different
// checkpoints with the same seq are an error: someone forked the state.
func Newest(instance string, events ...*nostr.Event) (*nip.Checkpoint, error) {
	var best *nip.Checkpoint
	for _, e := range events {
		if e == nil {
			continue
		}
		cp, err := nip.ParseCheckpoint(e)
		if err != nil || cp.Instance != instance {
			continue
		}
		switch {
		case best == nil || cp.Seq > best.Seq:
			best = &cp
		case cp.Seq == best.Seq && (cp.SHA256 != best.SHA256 || cp.Blob != best.Blob):
			return nil, fmt.Errorf("two different checkpoints %d (%s and %s)", cp.Seq, cp.Event.ID, best.Event.ID)
		}
	}
	return best, nil
}

// Restore fetches the blob cp names and loads it only if it is exactly
// the one cp states: the database goes to dbPath, volume archives into
// volDir. Anything else is a *RefusedError saying what it was.
func Restore(ctx context.Context, blobs Blobs, sec Secrets, cp nip.Checkpoint, dbPath, volDir string) (Manifest, error) {
	var m Manifest
	if cp.Instance != sec.Pubkey() {
		return m, &RefusedError{fmt.Sprintf("checkpoint %d is signed by %s, not this instance", cp.Seq, nip.Npub(cp.Instance))}
	}
	rc, err := blobs.Get(ctx, cp.Blob)
	if errors.Is(err, os.ErrNotExist) {
		return m, &RefusedError{fmt.Sprintf("backup %d (blob %s) is missing at the parent", cp.Seq, cp.Blob)}
	}
	if err != nil {
		return m, fmt.Errorf("fetch backup %d: %w", cp.Seq, err)
	}
	defer rc.Close()
	if err := os.MkdirAll(filepath.Dir(dbPath), 0o700); err != nil {
		return m, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(dbPath), ".restore-*")
	if err != nil {
		return m, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(rc, cp.Size+1))
	if err != nil {
		return m, fmt.Errorf("fetch backup %d: %w", cp.Seq, err)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return m, err
	}
	id, err := sec.identity()
	if err != nil {
		return m, err
	}
	dbTmp := dbPath + ".restoring"
	defer os.Remove(dbTmp)
	if got := hex.EncodeToString(h.Sum(nil)); got != cp.SHA256 || n != cp.Size {
		// Not the checkpointed blob. Say what it is, if it can be read.
		old, err := readArchive(tmp, id, dbTmp, filepath.Join(filepath.Dir(dbPath), ".restore-vol-discard"))
		os.RemoveAll(filepath.Join(filepath.Dir(dbPath), ".restore-vol-discard"))
		switch {
		case errors.Is(err, errNotOurs):
			return m, &RefusedError{fmt.Sprintf("blob %s is not this instance's backup (another instance's, or altered): %s", cp.Blob, err)}
		case err == nil && old.Instance == cp.Instance && old.Seq < cp.Seq:
			return m, &RefusedError{fmt.Sprintf("rollback: the parent returned backup %d, older than the newest checkpoint %d", old.Seq, cp.Seq)}
		default:
			return m, &RefusedError{fmt.Sprintf("blob %s does not match checkpoint %d (sha256 %s…, %d bytes; want %s…, %d bytes): altered",
				cp.Blob, cp.Seq, got[:12], n, cp.SHA256[:12], cp.Size)}
		}
	}
	os.RemoveAll(volDir) // an earlier restore's
	if m, err = readArchive(tmp, id, dbTmp, volDir); err != nil {
		return m, &RefusedError{fmt.Sprintf("backup %d: %v", cp.Seq, err)}
	}
	if m.Instance != cp.Instance || m.Seq != cp.Seq {
		return m, &RefusedError{fmt.Sprintf("backup %d says it is instance %s's backup %d", cp.Seq, nip.Npub(m.Instance), m.Seq)}
	}
	if err := restoreVolumes(ctx, blobs, id, m, filepath.Dir(dbPath), volDir); err != nil {
		return m, err
	}
	removeDB(dbPath)
	if err := os.Rename(dbTmp, dbPath); err != nil {
		return m, err
	}
	return m, nil
}
