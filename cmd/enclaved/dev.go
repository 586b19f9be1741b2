package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"

	"github.com/enclaved/enclaved/enclave"
	"github.com/enclaved/enclaved/internal/devrelay"
	"github.com/enclaved/enclaved/internal/logging"
	"github.com/enclaved/enclaved/store"
)

// devReady, when set (by tests), is called once the instance is up.
type devInfo struct {
	Npub     string
	RelayURL string
}

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer, environ []string, ready func(devInfo)) error {
	fs := newFlagSet("dev", "Runs a whole local instance: an embedded relay and the instance's bot,\nwith a dev attestor whose events are marked t=dev.", stderr)
	load := configFlags(fs, environ)
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := load()
	if err != nil {
		return err
	}
	log, err := logging.New(stderr, cfg.Log.Level, cfg.Log.Format)
	if err != nil {
		return err
	}
	log = log.With("mode", "dev")

	key, err := enclave.LoadOrCreateKey(filepath.Join(cfg.DataDir, "instance.key"))
	if err != nil {
		return err
	}
	db, err := store.Open(ctx, filepath.Join(cfg.DataDir, "enclaved.db"), store.Options{})
	if err != nil {
		return err
	}
	defer db.Close()
	if err := db.ClaimInstance(ctx, key.PublicKey()); err != nil {
		return err
	}

	relays := cfg.Nostr.Relays
	if cfg.Dev.RelayListen != "" {
		rl, err := devrelay.Start(cfg.Dev.RelayListen, filepath.Join(cfg.DataDir, "relay.db"))
		if err != nil {
			return err
		}
		defer rl.Close()
		relays = append([]string{rl.URL}, relays...)
		log.Info("embedded relay listening", "url", rl.URL)
	}
	if len(relays) == 0 {
		return fmt.Errorf("no relay: set nostr.relays or dev.relay_listen")
	}

	fmt.Fprintf(stdout, "enclaved dev instance (dev attestation; not a Nitro enclave)\n")
	fmt.Fprintf(stdout, "  npub:     %s\n", key.Npub())
	for _, r := range relays {
		fmt.Fprintf(stdout, "  relay:    %s\n", r)
	}
	fmt.Fprintf(stdout, "  data dir: %s\n", cfg.DataDir)
	log.Info("instance up", "instance", key, "db_version", db.Version)
	if ready != nil {
		ready(devInfo{Npub: key.Npub(), RelayURL: relays[0]})
	}
	<-ctx.Done()
	log.Info("shutting down")
	return nil
}
