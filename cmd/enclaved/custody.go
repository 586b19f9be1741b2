package main

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
	"github.com/enclaved/enclaved/enclave"
	"github.com/enclaved/enclaved/keystore"
	"github.com/enclaved/enclaved/nip"
	"github.com/enclaved/enclaved/store"
)

// custody is an instance's state kept outside the enclave: its keys in
// the key store and its backups in the parent's blob store.
type custody struct {
	cfg    config.Config
	ks     *keystore.Client
	pool   *nostr.SimplePool
	relays []string // the instance's relays, where checkpoints are published
	policy *keystore.Policy
	input  *keystore.Input
	state  backup.State
	log    *slog.Logger
}

// bootCustody gets the instance's keys from the key store and restores
// its newest backup into the data dir (backup.mode = keystore).
func bootCustody(ctx context.Context, cfg config.Config, a attest.Attester, blobs backup.Blobs, relays, releases []string, log *slog.Logger) (*custody, error) {
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
	c := &custody{cfg: cfg, pool: nostr.NewSimplePool(context.WithoutCancel(ctx)), relays: relays, log: log.With("part", "custody")}
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
		DBPath: filepath.Join(cfg.DataDir, "enclaved.db"), VolDir: c.volumeDir(),
		AcceptLoss: cfg.Backup.AcceptLoss, Log: c.log}.Run(bctx)
	if err != nil {
		c.pool.Close("boot failed")
		return nil, err
	}
	return c, nil
}

// volumeDir is where a restore leaves the containers' volumes.
func (c *custody) volumeDir() string { return filepath.Join(c.cfg.DataDir, "restore", "volumes") }

// key is the instance key the key store holds.
func (c *custody) key() (enclave.Key, error) { return enclave.ParseKey(c.state.Secrets.InstanceKey) }

// published fetches the instance's checkpoints from its relays.
func (c *custody) published(ctx context.Context, instance string) []*nostr.Event {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var out []*nostr.Event
	for re := range c.pool.FetchMany(ctx, c.relays, nostr.Filter{Kinds: []int{nip.KindCheckpoint}, Authors: []string{instance}}) {
		out = append(out, re.Event)
	}
	return out
}

// publish sends a checkpoint to the instance's relays.
func (c *custody) publish(ctx context.Context, evt nostr.Event) error {
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

// backuper takes the instance's backups of db.
func (c *custody) backuper(db *store.DB, blobs backup.Blobs, key enclave.Key) *backup.Backuper {
	b := &backup.Backuper{DB: db, Blobs: blobs, Secrets: c.state.Secrets, Keys: key.Keys(),
		Record: c.ks.RecordCheckpoint, Publish: c.publish,
		Newest: func(ctx context.Context) (*nostr.Event, error) { return c.ks.NewestCheckpoint(ctx, key.PublicKey()) },
		Dir:    c.cfg.DataDir, Delay: c.cfg.Backup.Delay, Interval: c.cfg.Backup.Interval, VolumeEvery: c.cfg.Backup.VolumeInterval,
		Log: c.log.With("part", "backup"), Last: c.state.Last}
	if c.state.Restored != nil {
		b.LastVolumes = c.state.Restored.Volumes
	}
	return b
}

// refresh sets the keys and the newest checkpoint in the key store again
// every keystore.refresh, so its TTL never drops them while the instance
// runs.
func (c *custody) refresh(ctx context.Context, b *backup.Backuper) {
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

func (c *custody) close() { c.pool.Close("instance stopped") }

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
