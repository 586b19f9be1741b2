package main

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/internal/testenv"
	"github.com/enclaved/enclaved/store"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// lndFlags point an instance at the shared regtest operator node, with its
// invoice macaroon.
func lndFlags(t *testing.T) []string {
	n := testenv.Lightning(t).Operator
	return []string{"-lnd-grpc", n.GRPCAddr, "-lnd-tls-cert", n.TLSCertPath(), "-lnd-macaroon", n.MacaroonPath("invoice")}
}

// startDev runs `enclaved dev` until the test ends and returns what it
// printed once it is up.
func startDev(t *testing.T, dataDir string) (devInfo, *testenv.SyncBuffer, func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr testenv.SyncBuffer
	ready := make(chan devInfo, 1)
	done := make(chan error, 1)
	args := append([]string{"-data-dir", dataDir, "-set", "dev.relay_listen=127.0.0.1:0", "-http", "127.0.0.1:0"}, lndFlags(t)...)
	go func() {
		done <- runDev(ctx, args, &stdout, &stderr, nil, func(i devInfo) { ready <- i })
	}()
	var once sync.Once
	var stopErr error
	stop := func() error {
		once.Do(func() { cancel(); stopErr = <-done })
		return stopErr
	}
	select {
	case info := <-ready:
		t.Cleanup(func() { stop() })
		return info, &stdout, stop
	case err := <-done:
		cancel()
		t.Fatalf("enclaved dev exited: %v\nstderr:\n%s", err, stderr.String())
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatalf("enclaved dev did not come up; stderr:\n%s", stderr.String())
	}
	return devInfo{}, nil, nil
}

// `enclaved dev` prints the instance npub and its embedded relay, which
// accepts events; a restart keeps the same identity and the relay's events.
func TestDevPrintsNpubAndServesRelay(t *testing.T) {
	dir := t.TempDir()
	info, stdout, stop := startDev(t, dir)
	if !strings.HasPrefix(info.Npub, "npub1") {
		t.Fatalf("npub %q", info.Npub)
	}
	for _, want := range []string{info.Npub, info.RelayURL, "dev attestation"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, stdout.String())
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rl, err := nostr.RelayConnect(ctx, info.RelayURL)
	if err != nil {
		t.Fatal(err)
	}
	sk := nostr.GeneratePrivateKey()
	evt := nostr.Event{Kind: 1, Content: "kept across restarts", CreatedAt: nostr.Now(), Tags: nostr.Tags{}}
	evt.Sign(sk)
	if err := rl.Publish(ctx, evt); err != nil {
		t.Fatal(err)
	}
	rl.Close()
	if err := stop(); err != nil {
		t.Fatalf("shutdown: %v", err)
	}

	again, _, _ := startDev(t, dir)
	if again.Npub != info.Npub {
		t.Errorf("restart changed the instance identity: %s, then %s", info.Npub, again.Npub)
	}
	rl, err = nostr.RelayConnect(ctx, again.RelayURL)
	if err != nil {
		t.Fatal(err)
	}
	defer rl.Close()
	got, err := rl.QuerySync(ctx, nostr.Filter{IDs: []string{evt.ID}})
	if err != nil || len(got) != 1 {
		t.Errorf("event published before the restart: %v, %v", got, err)
	}
}

// A data directory whose database belongs to another instance is refused.
func TestDevRefusesAnotherInstancesDatabase(t *testing.T) {
	dir := t.TempDir()
	db, err := store.Open(context.Background(), filepath.Join(dir, "enclaved.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	db.ClaimInstance(context.Background(), strings.Repeat("ab", 32))
	db.Close()
	var stderr bytes.Buffer
	err = runDev(context.Background(), append([]string{"-data-dir", dir, "-set", "dev.relay_listen=127.0.0.1:0"}, lndFlags(t)...), &bytes.Buffer{}, &stderr, nil, nil)
	if !errors.Is(err, store.ErrOtherInstance) {
		t.Fatalf("got %v, want ErrOtherInstance", err)
	}
}

func TestBadConfigNamesTheKey(t *testing.T) {
	err := run(context.Background(), []string{"dev", "-set", "log.level=loud"}, &bytes.Buffer{}, &bytes.Buffer{},
		[]string{"ENCLAVED_DATA_DIR=" + t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "log.level") {
		t.Fatalf("got %v, want an error naming log.level", err)
	}
	err = run(context.Background(), []string{"frobnicate"}, &bytes.Buffer{}, &bytes.Buffer{}, nil)
	if err == nil || !strings.Contains(err.Error(), "frobnicate") {
		t.Fatalf("unknown command: %v", err)
	}
}
