package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/enclaved/enclaved/attest"
	"github.com/enclaved/enclaved/backup"
	"github.com/enclaved/enclaved/billing/lnd"
	"github.com/enclaved/enclaved/config"
	"github.com/enclaved/enclaved/deployer"
	"github.com/enclaved/enclaved/deployer/docker"
	"github.com/enclaved/enclaved/egressproxy"
	"github.com/enclaved/enclaved/enclave"
	"github.com/enclaved/enclaved/frontend"
	"github.com/enclaved/enclaved/internal/devrelay"
	"github.com/enclaved/enclaved/internal/logging"
	"github.com/enclaved/enclaved/internal/regtest"
	"github.com/enclaved/enclaved/link"
	"github.com/enclaved/enclaved/store"
	"github.com/enclaved/enclaved/tunnel"
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
	fs := newFlagSet("dev", `Runs a whole local instance on this machine: the embedded relay unless
--relay is given, a regtest Lightning pair unless --lnd-grpc is given, the
local Docker engine, SQLite under the data dir. Dev attestation: its events
are marked t=dev.

  enclaved dev pay <bolt11>   pays an invoice from the regtest payer node`, stderr)
	load := configFlags(fs, environ)
	var relays setFlags
	fs.Var(&relays, "relay", "relay URL to use instead of the embedded relay; repeatable")
	lndGRPC := fs.String("lnd-grpc", "", "the operator's LND gRPC host:port (default: start a regtest pair)")
	lndCert := fs.String("lnd-tls-cert", "", "path to that LND's tls.cert")
	lndMac := fs.String("lnd-macaroon", "", "path to its invoice macaroon")
	httpAddr := fs.String("http", "", "HTTP API listen address (shorthand for -set http.listen=...)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("dev: unexpected argument %q (to pay: enclaved dev pay [flags] <bolt11>)", fs.Arg(0))
	}
	cfg, err := load(func(sets []string) []string {
		if len(relays) > 0 {
			sets = append(sets, "nostr.relays="+relays.String(), "dev.relay_listen=")
		}
		for k, v := range map[string]string{"lightning.grpc": *lndGRPC, "lightning.tls_cert": *lndCert,
			"lightning.macaroon": *lndMac, "http.listen": *httpAddr} {
			if v != "" {
				sets = append(sets, k+"="+v)
			}
		}
		return sets
	})
	if err != nil {
		return err
	}
	log, err := logging.New(stderr, cfg.Log.Level, cfg.Log.Format)
	if err != nil {
		return err
	}
	log = log.With("mode", "dev")

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
	if len(urls) == 0 {
		return fmt.Errorf("no relay: give --relay, or set nostr.relays or dev.relay_listen")
	}

	var ep lnd.Endpoint
	payHint := ""
	if cfg.Lightning.GRPC == "" {
		net, err := startRegtest(ctx, cfg.DataDir, stdout)
		if err != nil {
			return err
		}
		defer net.Close()
		if ep, err = net.Operator.Endpoint("invoice"); err != nil {
			return err
		}
		payHint = fmt.Sprintf("enclaved dev pay -data-dir %s <bolt11>", cfg.DataDir)
	} else if ep, err = lnd.EndpointFromFiles(cfg.Lightning.GRPC, cfg.Lightning.TLSCert, cfg.Lightning.Macaroon); err != nil {
		return err
	}
	return runInstance(ctx, cfg, log, instanceOpts{Relays: urls, LND: ep, Images: &deployer.Resolver{}, PayHint: payHint,
		Banner: "enclaved dev instance"}, stdout, ready)
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

// containerDial is how containers' allowed connections leave, checked at
// dial time against the operator's policy (which may have narrowed since a
// container was deployed): dial if given (the enclave's tunnel.Egress under
// that policy), else this host's network.
func containerDial(cfg config.Config, dial egressproxy.DialFunc) egressproxy.DialFunc {
	if dial != nil {
		return dial
	}
	policy := cfg.Instance.ContainerEgress
	var d net.Dialer
	d.Timeout = 15 * time.Second
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if !tunnel.Allowed(policy, addr) {
			return nil, &tunnel.DeniedError{Addr: addr}
		}
		return d.DialContext(ctx, network, addr)
	}
}

// serverTLS is the public listener's TLS (http.tls): none, the dev CA in
// the data dir, or ACME certificates for the names serves allows.
func serverTLS(cfg config.Config, serves func(context.Context, string) bool) (*tls.Config, error) {
	switch cfg.HTTP.TLS {
	case "dev":
		ca, err := frontend.LoadOrCreateDevCA(cfg.DataDir)
		if err != nil {
			return nil, err
		}
		fallback := "localhost"
		if u, err := url.Parse(cfg.HTTP.PublicURL); err == nil && u.Hostname() != "" {
			fallback = u.Hostname()
		}
		return frontend.ServerConfig(ca.GetCertificate(fallback), false), nil
	case "acme":
		m := frontend.ACME{Directory: cfg.HTTP.ACMEDirectory, Email: cfg.HTTP.ACMEEmail,
			CacheDir: filepath.Join(cfg.DataDir, "acme"), Allowed: serves}.Manager()
		return frontend.ServerConfig(m.GetCertificate, true), nil
	}
	return nil, nil
}

// instanceOpts are what differs between a dev instance and an enclave
// running apart from its parent.
type instanceOpts struct {
	Relays       []string
	LND          lnd.Endpoint
	Images       deployer.ImageResolver
	HTTPListener net.Listener
	PayHint      string
	Banner       string
	// Meta is what the parent says; its signatures are used where the
	// configuration names none.
	Meta link.Metadata
	// Egress is the instance's own allowlist (nil in dev mode).
	Egress []string
	// Blobs is the parent's blob store, where backups go (nil in dev
	// mode: there is no parent).
	Blobs backup.Blobs
	// ContainerDial carries containers' allowed connections out: in the
	// enclave a tunnel.Egress under instance.container_egress; nil: this
	// host's network, under the same policy.
	ContainerDial egressproxy.DialFunc
}

// runInstance opens the instance's key and database and runs it until ctx
// ends, printing where to reach it once it is up.
func runInstance(ctx context.Context, cfg config.Config, log *slog.Logger, o instanceOpts, stdout io.Writer, ready func(devInfo)) error {
	attester, err := newAttester(cfg)
	if err != nil {
		return err
	}
	// The keys and the state: from the key store and the parent's
	// backups (backup.mode = keystore), or the data dir (dev).
	var cust *custody
	var key enclave.Key
	if cfg.Backup.Mode == "keystore" {
		if cust, err = bootCustody(ctx, cfg, attester, o.Blobs, o.Relays, o.Meta.Releases, log); err != nil {
			return err
		}
		defer cust.close()
		key, err = cust.key()
	} else {
		key, err = enclave.LoadOrCreateKey(filepath.Join(cfg.DataDir, "instance.key"))
	}
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
	urls := o.Relays
	ln, err := lnd.New(o.LND)
	if err != nil {
		return err
	}
	defer ln.Close()
	rt, err := docker.New(ctx)
	if err != nil {
		return err
	}
	defer rt.Close()

	var bk *backup.Backuper
	parts := enclave.Parts{DB: db, Key: key, Runtime: rt, Lightning: ln,
		Images: o.Images, Relays: urls, Attester: attester, HTTPListener: o.HTTPListener, Egress: o.Egress}
	if cust != nil {
		mode := "prod"
		if attester.Mode() == "dev" {
			mode = "dev"
		}
		bk = cust.backuper(db, o.Blobs, key, mode)
		if cust.state.Last == nil {
			// A first boot is recorded before anything is sold.
			if _, err := bk.Backup(ctx); err != nil {
				return fmt.Errorf("first backup: %w", err)
			}
		}
		parts.Backup = bk
		parts.RestoreDir = cust.volumeDir()
	}
	if cfg.Enclave.ConfineContainers {
		m := &egressproxy.Manager{Dial: containerDial(cfg, o.ContainerDial), Log: log.With("part", "egressproxy"), Firewall: &egressproxy.Firewall{}}
		defer m.Close(context.Background())
		parts.Confiner = m
	}
	var in *enclave.Instance
	if parts.TLS, err = serverTLS(cfg, func(ctx context.Context, host string) bool { return in != nil && in.ServesHost(ctx, host) }); err != nil {
		return err
	}
	if in, err = enclave.NewInstance(cfg, parts, Version, true, time.Now, log); err != nil {
		return err
	}
	if bk != nil {
		// Backups keep the containers' volumes too. They outlive the
		// instance's context: the last one is taken once everything
		// else stopped.
		bk.Volumes = in.Deployer
		bctx, bcancel := context.WithCancel(context.WithoutCancel(ctx))
		bdone := make(chan error, 1)
		go func() { bdone <- bk.Run(bctx) }()
		go cust.refresh(bctx, bk)
		defer func() {
			bcancel()
			if err := <-bdone; err != nil {
				log.Error("last backup failed", "err", err)
			}
		}()
	}
	for _, err := range in.UseSignatures(o.Meta.Build, o.Meta.Instance, o.Meta.Releases) {
		log.Warn("a signature from the parent was skipped", "err", err)
	}
	err = in.Run(ctx, func(httpAddr string) {
		if attester.Mode() == "dev" {
			fmt.Fprintf(stdout, "%s (dev attestation; not a Nitro enclave)\n", o.Banner)
		} else {
			fmt.Fprintf(stdout, "%s (%s attestation)\n", o.Banner, attester.Mode())
		}
		fmt.Fprintf(stdout, "  npub:     %s\n", key.Npub())
		for _, r := range urls {
			fmt.Fprintf(stdout, "  relay:    %s\n", r)
		}
		if o.HTTPListener != nil && cfg.HTTP.PublicURL != "" {
			fmt.Fprintf(stdout, "  http:     %s/api/v1/instance\n", strings.TrimSuffix(cfg.HTTP.PublicURL, "/"))
		} else if httpAddr != "" {
			fmt.Fprintf(stdout, "  http:     http://%s/api/v1/instance\n", httpAddr)
		}
		fmt.Fprintf(stdout, "  data dir: %s\n", cfg.DataDir)
		if attester.Mode() == "dev" {
			fmt.Fprintf(stdout, "  dev root: %s\n", filepath.Join(cfg.DataDir, "dev-root.pem"))
		}
		if cfg.HTTP.TLS == "dev" {
			fmt.Fprintf(stdout, "  dev CA:   %s\n", filepath.Join(cfg.DataDir, "dev-ca.pem"))
		}
		fmt.Fprintf(stdout, "try:       enclaved dm -relay %s %s help\n", urls[0], key.Npub())
		if o.PayHint != "" {
			fmt.Fprintf(stdout, "pay:       %s\n", o.PayHint)
		}
		log.Info("instance up", "instance", key, "db_version", db.Version)
		if ready != nil {
			ready(devInfo{Npub: key.Npub(), Pubkey: key.PublicKey(), RelayURL: urls[0], HTTPAddr: httpAddr})
		}
	})
	log.Info("shutting down")
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
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
	cfg, err := load(nil)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(filepath.Join(cfg.DataDir, "regtest", payerFile))
	if err != nil {
		return fmt.Errorf("dev pay: no regtest payer in %s (is `enclaved dev` running with this data dir?): %w", cfg.DataDir, err)
	}
	var pi payerInfo
	if err := json.Unmarshal(b, &pi); err != nil {
		return fmt.Errorf("dev pay: %s: %w", payerFile, err)
	}
	ep, err := lnd.EndpointFromFiles(pi.GRPC, pi.TLSCert, pi.Macaroon)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	p, err := regtest.PayWith(ctx, ep, fs.Arg(0))
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "paid %d sats (fee %d msat)\n", p.ValueSat, p.FeeMsat)
	return nil
}

// newAttester is the attester attest.mode chooses: the Nitro Security
// Module, or the dev attestor with its root in the data dir (reporting the
// PCR4 and PCR8 the attest.dev_* keys simulate).
func newAttester(cfg config.Config) (attest.Attester, error) {
	if cfg.Attest.Mode == "nitro" {
		return attest.OpenNitro()
	}
	binHash, err := attest.BinaryHash()
	if err != nil {
		return nil, err
	}
	rootDir := cfg.Attest.DevRootDir
	if rootDir == "" {
		rootDir = cfg.DataDir
	}
	dev, err := attest.LoadOrCreateDev(rootDir, binHash, time.Now)
	if err != nil {
		return nil, err
	}
	var der []byte
	if f := cfg.Attest.DevSigningCert; f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("attest.dev_signing_cert: %w", err)
		}
		blk, _ := pem.Decode(b)
		if blk == nil || blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("attest.dev_signing_cert: %s is not a PEM certificate", f)
		}
		der = blk.Bytes
	}
	dev.Simulate(cfg.Attest.DevInstanceID, der)
	return dev, nil
}
