package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/enclaved/enclaved/internal/devrelay"
)

// runDevnet runs what a split dev instance talks to: the embedded relay and
// a fresh regtest Lightning pair. It writes the enclave's part of the
// configuration (relays, lightning.*) to a TOML file for `enclaved enclave
// -config`, and the payer's credentials for `enclaved dev pay`. The
// docker-compose topology runs it, with the parent in its network
// namespace: the addresses it writes are the ones the parent dials.
func runDevnet(ctx context.Context, args []string, stdout, stderr io.Writer, environ []string) error {
	fs := newFlagSet("devnet", `Runs the embedded relay and a regtest Lightning pair, writes the enclave's
relay and Lightning settings to -enclave-config, and runs until stopped.
Pay invoices with: enclaved dev pay -data-dir DIR <bolt11>`, stderr)
	dataDir := fs.String("data-dir", "", "where the relay's events and the regtest network live (required)")
	listen := fs.String("relay-listen", "127.0.0.1:7447", "the relay's listen address")
	out := fs.String("enclave-config", "", "the TOML file to write for the enclave (default DATA_DIR/enclave.toml)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dataDir == "" {
		fs.Usage()
		return fmt.Errorf("devnet: -data-dir is required")
	}
	if *out == "" {
		*out = filepath.Join(*dataDir, "enclave.toml")
	}
	if err := ensureDir(*dataDir, "data dir", "-data-dir"); err != nil {
		return err
	}
	os.Remove(*out) // the enclave waits for a fresh one
	rl, err := devrelay.Start(*listen, filepath.Join(*dataDir, "relay.db"))
	if err != nil {
		return err
	}
	defer rl.Close()
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(rl.URL, "ws://"))
	relay := "ws://127.0.0.1:" + port
	rn, err := startRegtest(ctx, *dataDir, stdout)
	if err != nil {
		return err
	}
	defer rn.Close()
	toml := fmt.Sprintf(`# Written by enclaved devnet at %s.
[nostr]
relays = [%s]

[lightning]
grpc = %s
tls_cert = %s
macaroon = %s
`, time.Now().UTC().Format(time.RFC3339), strconv.Quote(relay), strconv.Quote(rn.Operator.GRPCAddr),
		strconv.Quote(rn.Operator.TLSCertPath()), strconv.Quote(rn.Operator.MacaroonPath("invoice")))
	tmp := *out + ".tmp"
	if err := os.WriteFile(tmp, []byte(toml), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, *out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "devnet up\n  relay:    %s (listening on %s)\n  lnd:      %s\n  enclave:  %s\npay:       enclaved dev pay -data-dir %s <bolt11>\n",
		relay, *listen, rn.Operator.GRPCAddr, *out, *dataDir)
	<-ctx.Done()
	return nil
}

// waitForFile waits until path exists, at most d.
func waitForFile(ctx context.Context, path string, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not appear within %s", path, d)
		case <-t.C:
		}
	}
}
