package backup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/keystore"
	"github.com/enclaved/enclaved/nip"
)

// KeyStore is the key store as a boot uses it (*keystore.Client).
type KeyStore interface {
	Get(ctx context.Context, in *keystore.Input) (string, error)
	Set(ctx context.Context, data string, p *keystore.Policy, in *keystore.Input) error
	NewestCheckpoint(ctx context.Context, instance string) (*nostr.Event, error)
}

// Boot brings an enclave's state back before anything else runs: its keys
// from the key store, then its database (and volume archives) from the
// newest backup.
type Boot struct {
	KeyStore KeyStore
	// Policy (nil: only this very build may have the keys) and Input go
	// with the keys to the key store.
	Policy *keystore.Policy
	Input  *keystore.Input
	Blobs  Blobs
	// Published (optional) returns the checkpoints the relays hold for
	// an instance.
	Published func(ctx context.Context, instance string) []*nostr.Event
	// NewKey returns a fresh instance key (hex) for a first boot.
	NewKey         func() (string, error)
	DBPath, VolDir string
	// AcceptLoss: start although the state cannot be brought back (the
	// operator's acknowledgement).
	AcceptLoss bool
	Log        *slog.Logger
}

// State is what a boot found.
type State struct {
	Secrets Secrets
	// Last is the newest checkpoint (nil: there is none yet), Restored
	// the manifest of the backup loaded (nil: none was).
	Last     *nip.Checkpoint
	Restored *Manifest
	// Fresh: a new instance (new keys) was made.
	Fresh bool
}

// ErrNeedsAcknowledgement starts the message of a boot that stopped
// because state would be lost.
var ErrNeedsAcknowledgement = errors.New("state would be lost; set backup.accept_loss = true to start anyway")

// Run does the boot.
func (b Boot) Run(ctx context.Context) (State, error) {
	log := b.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	data, err := b.KeyStore.Get(ctx, b.Input)
	if keystore.IsNotFound(err) {
		return b.first(ctx, log, err)
	}
	if err != nil {
		return State{}, fmt.Errorf("keys from the key store: %w", err)
	}
	sec, err := ParseSecrets(data)
	if err != nil {
		return State{}, err
	}
	st := State{Secrets: sec}
	pub := sec.Pubkey()
	events := []*nostr.Event{}
	recorded, err := b.KeyStore.NewestCheckpoint(ctx, pub)
	if err != nil {
		return State{}, fmt.Errorf("newest checkpoint from the key store: %w", err)
	}
	events = append(events, recorded)
	if b.Published != nil {
		events = append(events, b.Published(ctx, pub)...)
	}
	if st.Last, err = Newest(pub, events...); err != nil {
		return State{}, err
	}
	if st.Last == nil {
		// Keys without a checkpoint: a key store that lost it, or a first
		// boot that stopped between storing its keys and its first backup
		// (before anything was sold). The two look alike, so it is a loss
		// case like the others.
		held, err := b.held(ctx)
		if err != nil {
			return State{}, err
		}
		if !b.AcceptLoss {
			return State{}, fmt.Errorf("the key store has this instance's keys but no backup checkpoint (the parent holds %v): "+
				"a key store that lost it, or a first boot that stopped before its first backup (%w)", held, ErrNeedsAcknowledgement)
		}
		log.Error("the key store has this instance's keys but no backup checkpoint; starting empty as backup.accept_loss says", "blobs", held)
		removeDB(b.DBPath)
		return st, nil
	}
	m, err := Restore(ctx, b.Blobs, sec, *st.Last, b.DBPath, b.VolDir)
	if err != nil {
		if b.AcceptLoss {
			log.Error("the newest backup cannot be restored; starting empty as backup.accept_loss says", "seq", st.Last.Seq, "err", err)
			removeDB(b.DBPath)
			return st, nil
		}
		return State{}, fmt.Errorf("restore backup %d: %w (%w)", st.Last.Seq, err, ErrNeedsAcknowledgement)
	}
	st.Restored = &m
	log.Info("state restored", "seq", m.Seq, "schema", m.Schema)
	return st, nil
}

// first makes a new instance, unless the parent holds backups that the
// missing keys would orphan.
func (b Boot) first(ctx context.Context, log *slog.Logger, notFound error) (State, error) {
	held, err := b.held(ctx)
	if err != nil {
		return State{}, err
	}
	if len(held) > 0 {
		if !b.AcceptLoss {
			return State{}, fmt.Errorf("the key store has no keys for this build (%v) but the parent holds backups %v: "+
				"a build the policy does not allow, an expired key store entry, or another key store (%w)", notFound, held, ErrNeedsAcknowledgement)
		}
		log.Error("the key store has no keys for this build; starting a new instance over the parent's backups as backup.accept_loss says", "blobs", held)
	}
	key, err := b.NewKey()
	if err != nil {
		return State{}, err
	}
	sec, err := NewSecrets(key)
	if err != nil {
		return State{}, err
	}
	if err := b.KeyStore.Set(ctx, sec.Marshal(), b.Policy, b.Input); err != nil {
		return State{}, fmt.Errorf("store the new keys in the key store: %w", err)
	}
	log.Info("first boot: new instance keys stored in the key store", "instance", nip.Npub(sec.Pubkey()))
	removeDB(b.DBPath) // whatever is here is not this instance's
	return State{Secrets: sec, Fresh: true}, nil
}

// held lists the backup slots the parent holds a blob in.
func (b Boot) held(ctx context.Context) ([]string, error) {
	held := []string{}
	for _, name := range Slots {
		rc, err := b.Blobs.Get(ctx, name)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("ask the parent for backups: %w", err)
		}
		rc.Close()
		held = append(held, name)
	}
	return held, nil
}

// removeDB removes a database file and its WAL: the backups, not the
// local disk, are the state.
func removeDB(path string) {
	for _, suffix := range []string{"", "-wal", "-shm"} {
		os.Remove(path + suffix)
	}
}
