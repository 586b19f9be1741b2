package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/lightningnetwork/lnd/lnrpc"

	"github.com/enclaved/enclaved/billing/lnd"
	"github.com/enclaved/enclaved/enclave"
	"github.com/enclaved/enclaved/images"
	"github.com/enclaved/enclaved/internal/devrelay"
	"github.com/enclaved/enclaved/internal/logging"
	"github.com/enclaved/enclaved/internal/regtest"
)

// devInfo is what a running dev instance tells tests once it is up.
type devInfo struct {
	Npub     string
	Pubkey   string
	RelayURL string
	HTTPAddr string
}

// payerFile, in the regtest directory, tells `enclaved dev pay` how to
// reach the dev payer node.
const payerFile = "payer.json"

type payerInfo struct {
	GRPC     string `json:"grpc"`
	TLSCert  string `json:"tls_cert"`
	Macaroon string `json:"macaroon"`
}

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer, environ []string, ready func(devInfo)) error {
	if len(args) > 0 && args[0] == "pay" {
		return runDevPay(ctx, args[1:], stdout, stderr, environ)
	}
	if len(args) > 0 && args[0] == "zap" {
		return runDevZap(ctx, args[1:], stdout, stderr, environ)
	}
	fs := newFlagSet("dev", `Runs a whole local instance on this machine: the embedded relay unless
--relay is given, a regtest Lightning pair unless --lnd-grpc is given, the
local Docker engine, SQLite under the data dir. Dev attestation: its events
are marked t=dev.

  enclaved dev pay <bolt11>   pays an invoice from the regtest payer node`, stderr)
	load := configFlags(fs, environ, devShorthands...)
	pprofAddr := fs.String("pprof", "", "serve Go profiles on this loopback host:port (for benchmarks: internal/bench)")
	demoBin := fs.String("demo", "", "a static linux/amd64 program to serve as the demo image (make dev builds ./internal/devregistry/hello)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("dev: unexpected argument %q (to pay: enclaved dev pay [flags] <bolt11>)", fs.Arg(0))
	}
	all, err := load()
	if err != nil {
		return err
	}
	cfg := all.ForDev()
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
	log = log.With("mode", "dev")
	if *pprofAddr != "" {
		stop, err := servePprof(*pprofAddr, stdout)
		if err != nil {
			return err
		}
		defer stop()
	}

	urls := cfg.Nostr.Relays
	if cfg.Dev.RelayListen != "" {
		rl, err := devrelay.Start(cfg.Dev.RelayListen, filepath.Join(cfg.DataDir, "relay.db"))
		if err != nil {
			return err
		}
		defer rl.Close()
		urls = append([]string{rl.URL}, urls...)
		log.Info("embedded relay listening", "url", rl.URL)
	}

	// A dev instance on this machine is reached as localhost, so its
	// containers' pages open in any browser at http://NAME.localhost:PORT/.
	var httpLn net.Listener
	if cfg.HTTP.PublicURL == "" && isLoopbackAddr(cfg.HTTP.Listen) {
		if httpLn, err = net.Listen("tcp", cfg.HTTP.Listen); err != nil {
			return fmt.Errorf("http.listen: %w", err)
		}
		defer httpLn.Close()
		_, port, _ := net.SplitHostPort(httpLn.Addr().String())
		scheme := "http"
		if cfg.HTTP.TLS != "" {
			scheme = "https"
		}
		cfg.HTTP.PublicURL = scheme + "://localhost:" + port
	}
	hints := devHints{Self: selfCommand(), Defaults: clientDefaults(environ)}
	if *demoBin != "" {
		reg, img, err := serveDemo(ctx, cfg.Dev.RegistryListen, *demoBin)
		if err != nil {
			return err
		}
		defer reg.Close()
		hints.Demo = img.Ref
		log.Info("demo image served", "image", img.Ref)
	}

	var ep lnd.Endpoint
	if cfg.Lightning.GRPC == "" {
		net, err := startRegtest(ctx, cfg.DataDir, stdout)
		if err != nil {
			return err
		}
		defer net.Close()
		if ep, err = net.Operator.Endpoint("invoice"); err != nil {
			return err
		}
		hints.Pay = true
	} else if ep, err = lnd.EndpointFromFiles(cfg.Lightning.GRPC, cfg.Lightning.TLSCert, cfg.Lightning.Macaroon); err != nil {
		return err
	}
	m := &enclave.Main{Config: cfg.InstanceConfig, Version: Version, Log: log, Relays: urls, LND: ep, Images: &images.Resolver{}, HTTPListener: httpLn,
		Ready: announce(banner{Title: "enclaved dev instance", Hints: hints.text}, stdout, ready)}
	return m.Run(ctx)
}

// startRegtest starts a fresh regtest Lightning network under dataDir and
// writes the payer's credentials for `enclaved dev pay -data-dir dataDir`.
func startRegtest(ctx context.Context, dataDir string, stdout io.Writer) (*regtest.Net, error) {
	bins, err := regtest.Tools()
	if err != nil {
		return nil, fmt.Errorf("regtest Lightning (give --lnd-grpc to use your own node): %w", err)
	}
	// A fresh network each run (see regtest.Start): invoices of an earlier
	// run are void; balances and containers are kept.
	dir := filepath.Join(dataDir, "regtest")
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("cannot clear the regtest dir: %w", err)
	}
	if err := ensureDir(dir, "regtest dir", "-data-dir (data_dir)"); err != nil {
		return nil, err
	}
	fmt.Fprintf(stdout, "starting a fresh regtest Lightning network in %s …\n", dir)
	net, err := regtest.Start(ctx, dir, bins)
	if err != nil {
		return nil, fmt.Errorf("regtest Lightning: %w", err)
	}
	pi, _ := json.Marshal(payerInfo{GRPC: net.Payer.GRPCAddr, TLSCert: net.Payer.TLSCertPath(), Macaroon: net.Payer.MacaroonPath("admin")})
	if err := os.WriteFile(filepath.Join(dir, payerFile), pi, 0o600); err != nil {
		net.Close()
		return nil, err
	}
	return net, nil
}

// runDevPay pays an invoice from the dev instance's regtest payer node.
func runDevPay(ctx context.Context, args []string, stdout, stderr io.Writer, environ []string) error {
	fs := newFlagSet("dev pay", "Pays a BOLT-11 invoice from the regtest payer node of `enclaved dev`.", stderr)
	load := configFlags(fs, environ)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("dev pay: want exactly one invoice")
	}
	cfg, err := load()
	if err != nil {
		return err
	}
	p, err := payFromDevPayer(ctx, cfg.DataDir, fs.Arg(0))
	if err != nil {
		return fmt.Errorf("dev pay: %w", err)
	}
	fmt.Fprintf(stdout, "paid %d sats (fee %d msat)\n", p.ValueSat, p.FeeMsat)
	return nil
}

// payFromDevPayer pays bolt11 from the regtest payer node of the dev
// instance whose data dir is dataDir, waiting at most a minute.
func payFromDevPayer(ctx context.Context, dataDir, bolt11 string) (*lnrpc.Payment, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, "regtest", payerFile))
	if err != nil {
		return nil, fmt.Errorf("no regtest payer in %s (is `enclaved dev` running with this data dir?): %w", dataDir, err)
	}
	var pi payerInfo
	if err := json.Unmarshal(b, &pi); err != nil {
		return nil, fmt.Errorf("%s: %w", payerFile, err)
	}
	ep, err := lnd.EndpointFromFiles(pi.GRPC, pi.TLSCert, pi.Macaroon)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return regtest.PayWith(ctx, ep, bolt11)
}
