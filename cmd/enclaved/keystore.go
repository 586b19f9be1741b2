package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/enclave"
	"github.com/enclaved/enclaved/internal/logging"
	"github.com/enclaved/enclaved/keystore"
	"github.com/enclaved/enclaved/verify"
)

// runKeyStore serves the key store on nostr.relays.
func runKeyStore(ctx context.Context, args []string, stdout, stderr io.Writer, environ []string) error {
	fs := newFlagSet("keystore", `Runs a key store: it keeps each instance's keys (sent with set) in memory
for keystore.ttl and gives them back (get) only to an enclave whose fresh
attestation, bound to the request's key, shows the same PCR0/1/2/4, or the
same PCR4 and a PCR0/1/2 the keys' maintainers signed. It records each
instance's newest backup checkpoint, and refuses older ones. Requests and
replies are kind-29525 NIP-44 JSON-RPC on nostr.relays (keycrux's protocol).
Documents must chain to the AWS Nitro root, or to keystore.dev_root (dev).
Meant to run in its own enclave; its key is data_dir/keystore.key.`, stderr)
	load := configFlags(fs, environ, keyStoreShorthands...)
	if err := fs.Parse(args); err != nil {
		return err
	}
	all, err := load()
	if err != nil {
		return err
	}
	cfg := all.ForKeyStore()
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := ensureDir(cfg.DataDir, "data dir", "-data-dir (data_dir)"); err != nil {
		return err
	}
	log, err := logging.New(stderr, cfg.Log.Level, cfg.Log.Format)
	if err != nil {
		return err
	}
	opt := verify.Options{}
	if f := cfg.KeyStore.DevRoot; f != "" {
		if opt.DevRoot, err = os.ReadFile(f); err != nil {
			return fmt.Errorf("keystore.dev_root: %w", err)
		}
		opt.AllowDev = true
	}
	key, err := enclave.LoadOrCreateKey(filepath.Join(cfg.DataDir, "keystore.key"))
	if err != nil {
		return err
	}
	s := &keystore.Server{Keys: key.Keys(), Verify: keystore.DocumentVerifier(opt), TTL: cfg.KeyStore.TTL,
		Log: log.With("part", "keystore")}
	pool := nostr.NewSimplePool(ctx)
	defer pool.Close("key store stopped")
	fmt.Fprintln(stdout, "enclaved keystore")
	fmt.Fprintf(stdout, "  npub:    %s\n", key.Npub())
	fmt.Fprintf(stdout, "  pubkey:  %s\n", key.PublicKey())
	for _, r := range cfg.Nostr.Relays {
		fmt.Fprintf(stdout, "  relay:   %s\n", r)
	}
	if opt.AllowDev {
		fmt.Fprintf(stdout, "  accepts: dev attestations under %s (development only)\n", cfg.KeyStore.DevRoot)
	}
	fmt.Fprintln(stdout, "keystore up")
	log.Info("key store up", "keystore", key)
	if err := s.Serve(ctx, pool, cfg.Nostr.Relays); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
