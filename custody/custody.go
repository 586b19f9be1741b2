// Package custody keeps an instance's state outside the enclave, where
// backup.mode = keystore asks for it: its keys in the key store (released
// only to an attested enclave of the same or a signed build) and its
// encrypted backups in the parent's blob store. Boot gets the keys and
// restores the newest backup; Backuper and Refresh keep both current while
// the instance runs.
//
// It runs inside the enclave. It must not import parent; it does not
// import enclave, whose Main uses it.
package custody

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/nbd-wtf/go-nostr"
	"github.com/nbd-wtf/go-nostr/nip19"

	"github.com/enclaved/enclaved/attest"
	"github.com/enclaved/enclaved/backup"
	"github.com/enclaved/enclaved/config"
	"github.com/enclaved/enclaved/keystore"
	"github.com/enclaved/enclaved/nip"
	"github.com/enclaved/enclaved/store"
)

// Custody is an instance's state kept outside the enclave: its keys in
// the key store and its backups in the parent's blob store.
type Custody struct {
	cfg    config.InstanceConfig
	ks     *keystore.Client
	pool   *nostr.SimplePool
	relays []string // the instance's relays, where checkpoints are published
	policy *keystore.Policy
	input  *keystore.Input
	state  backup.State
	log    *slog.Logger
}

// Boot gets the instance's keys from the key store (attested by a) and
// restores its newest backup from blobs into the data dir. relays are the
// instance's, where its checkpoints are published; releases are the
// maintainers' release signatures (JSON) shown to the key store.
func Boot(ctx context.Context, cfg config.InstanceConfig, a attest.Attester, blobs backup.Blobs, relays, releases []string, log *slog.Logger) (*Custody, error) {
	if blobs == nil {
		return nil, errors.New("backup.mode = keystore needs a parent to keep the backups: run enclaved enclave (and enclaved parent)")
	}
	server, err := hexPubkey(cfg.KeyStore.Pubkey)
	if err != nil {
		return nil, fmt.Errorf("keystore.pubkey: %w", err)
	}
	ksRelays := cfg.KeyStore.Relays
	if len(ksRelays) == 0 {
		ksRelays = relays
	}
	// Each boot asks with a new request key, attested afresh.
	reqKeys, err := nip.NewLocalKeys(nostr.GeneratePrivateKey())
	if err != nil {
		return nil, err
	}
	// The pool outlives ctx: the last backup at shutdown records its
	// checkpoint through it. close closes it.
	c := &Custody{cfg: cfg, pool: nostr.NewSimplePool(context.WithoutCancel(ctx)), relays: relays, log: log.With("part", "custody")}
	c.ks = &keystore.Client{Server: server, Relays: ksRelays, Pool: c.pool, Keys: reqKeys,
		Attest: func(ctx context.Context, pub []byte) ([]byte, error) { return a.Attest(ctx, pub, nil, nil) }}
	c.input = &keystore.Input{Ref: cfg.Backup.Ref}
	for _, raw := range releases {
		e, err := nip.ParseSigned([]byte(raw), nip.KindRelease, nip.KindReleaseLegacy)
		if err != nil {
			log.Warn("a release signature was skipped", "err", err)
			continue
		}
		c.input.ReleaseSignatures = append(c.input.ReleaseSignatures, *e)
	}
	c.ks.Input = c.input
	// Without maintainers, only this very build may have the keys: a
	// policy without release keys would let any build with the ref in.
	if len(cfg.Backup.Maintainers) > 0 {
		c.policy = &keystore.Policy{Ref: cfg.Backup.Ref, ReleasePubkeys: cfg.Backup.Maintainers, Threshold: int(cfg.Backup.Threshold)}
	}
	bctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	c.state, err = backup.Boot{KeyStore: c.ks, Policy: c.policy, Input: c.input, Blobs: blobs,
		Published: c.published, NewKey: func() (string, error) { return nostr.GeneratePrivateKey(), nil },
		DBPath: filepath.Join(cfg.DataDir, "enclaved.db"), VolDir: c.VolumeDir(),
		AcceptLoss: cfg.Backup.AcceptLoss, Log: c.log}.Run(bctx)
	if err != nil {
		c.pool.Close("boot failed")
		return nil, err
	}
	return c, nil
}

// VolumeDir is where a restore leaves the containers' volumes.
func (c *Custody) VolumeDir() string { return filepath.Join(c.cfg.DataDir, "restore", "volumes") }

// InstanceKey is the instance's secret key (hex) the key store holds.
func (c *Custody) InstanceKey() string { return c.state.Secrets.InstanceKey }

// FirstBoot says there is no checkpoint yet: a first backup is due before
// anything is sold.
func (c *Custody) FirstBoot() bool { return c.state.Last == nil }

// published fetches the instance's checkpoints from its relays.
func (c *Custody) published(ctx context.Context, instance string) []*nostr.Event {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var out []*nostr.Event
	for re := range c.pool.FetchMany(ctx, c.relays, nostr.Filter{Kinds: []int{nip.KindCheckpoint}, Authors: []string{instance}}) {
		out = append(out, re.Event)
	}
	return out
}

// publish sends a checkpoint to the instance's relays.
func (c *Custody) publish(ctx context.Context, evt nostr.Event) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var errs []error
	for r := range c.pool.PublishMany(ctx, c.relays, evt) {
		if r.Error == nil {
			return nil
		}
		errs = append(errs, r.Error)
	}
	return errors.Join(errs...)
}

// Backuper takes the backups of db, signing checkpoints with keys (the
// instance key, whose hex public key is pubkey); its Mode is the caller's
// to set.
func (c *Custody) Backuper(db *store.DB, blobs backup.Blobs, keys nostr.Keyer, pubkey string) *backup.Backuper {
	b := &backup.Backuper{DB: db, Blobs: blobs, Secrets: c.state.Secrets, Keys: keys,
		Record: c.ks.RecordCheckpoint, Publish: c.publish,
		Newest: func(ctx context.Context) (*nostr.Event, error) { return c.ks.NewestCheckpoint(ctx, pubkey) },
		Dir:    c.cfg.DataDir, Delay: c.cfg.Backup.Delay, Interval: c.cfg.Backup.Interval, VolumeEvery: c.cfg.Backup.VolumeInterval,
		Log: c.log.With("part", "backup"), Last: c.state.Last}
	if c.state.Restored != nil {
		b.LastVolumes = c.state.Restored.Volumes
	}
	return b
}

// Refresh sets the keys and the newest checkpoint in the key store again
// every keystore.refresh, so its TTL never drops them while the instance
// runs.
func (c *Custody) Refresh(ctx context.Context, b *backup.Backuper) {
	t := time.NewTicker(c.cfg.KeyStore.Refresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := c.ks.Set(ctx, c.state.Secrets.Marshal(), c.policy, c.input); err != nil {
			c.log.Warn("refreshing the keys in the key store failed", "err", err)
		}
		// A key store that lost the checkpoint (it restarted) gets the
		// next one.
		if evt, err := c.ks.NewestCheckpoint(ctx, c.state.Secrets.Pubkey()); err == nil && evt == nil {
			c.log.Warn("the key store lost the newest checkpoint; taking a backup to record one")
			b.Changed()
		}
	}
}

// Close closes the relay pool; the last checkpoint is recorded before.
func (c *Custody) Close() { c.pool.Close("instance stopped") }

// hexPubkey reads a hex or npub public key.
func hexPubkey(s string) (string, error) {
	if nostr.IsValid32ByteHex(s) {
		return s, nil
	}
	if prefix, v, err := nip19.Decode(s); err == nil && prefix == "npub" {
		return v.(string), nil
	}
	return "", fmt.Errorf("%q is neither a hex pubkey nor an npub", s)
}
