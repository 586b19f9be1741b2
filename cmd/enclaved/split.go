package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/acme"

	"github.com/enclaved/enclaved/billing/lnd"
	"github.com/enclaved/enclaved/config"
	"github.com/enclaved/enclaved/deployer"
	"github.com/enclaved/enclaved/enclave"
	"github.com/enclaved/enclaved/internal/logging"
	"github.com/enclaved/enclaved/link"
	"github.com/enclaved/enclaved/nip"
	"github.com/enclaved/enclaved/parent"
	"github.com/enclaved/enclaved/tunnel"
)

// runParent runs the host side: it serves the enclave's link and forwards
// public ports into it.
func runParent(ctx context.Context, args []string, stdout, stderr io.Writer, environ []string) error {
	if len(args) > 0 && args[0] == "launch" {
		return runLaunch(ctx, args[1:], stdout, stderr, environ)
	}
	fs := newFlagSet("parent", `Runs the parent, the untrusted host side of an enclave: it accepts the
enclave's link (parent.listen: vsock:PORT in production), dials TCP for it,
forwards public ports into it (parent.forward), keeps its encrypted blobs
and its log lines. It holds no secret.`, stderr)
	load := configFlags(fs, environ, parentShorthands...)
	if err := fs.Parse(args); err != nil {
		return err
	}
	all, err := load()
	if err != nil {
		return err
	}
	cfg := all.ForParent()
	log, err := logging.New(stderr, cfg.Log.Level, cfg.Log.Format)
	if err != nil {
		return err
	}
	log = log.With("side", "parent")
	blobs := cfg.Parent.BlobDir
	if blobs == "" {
		blobs = filepath.Join(cfg.DataDir, "blobs")
	}
	if err := ensureDir(blobs, "blob dir", "parent.blob_dir (or -data-dir)"); err != nil {
		return err
	}
	meta := link.Metadata{InstanceID: cfg.Parent.InstanceID, PublicIP: cfg.Parent.PublicIP}
	// The operator's signatures are passed on as they are: the enclave
	// checks them, and verifiers check them against its attestation.
	read := func(key, path string) (string, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("%s: %w", key, err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	if f := cfg.Instance.BuildSignature; f != "" {
		if meta.Build, err = read("instance.build_signature", f); err != nil {
			return err
		}
	}
	if f := cfg.Instance.InstanceSignature; f != "" {
		if meta.Instance, err = read("instance.instance_signature", f); err != nil {
			return err
		}
	}
	for _, f := range cfg.Instance.Releases {
		r, err := read("instance.releases", f)
		if err != nil {
			return err
		}
		meta.Releases = append(meta.Releases, r)
	}
	srv := &parent.Server{BlobDir: blobs, LogOut: stderr, Log: log, Meta: meta}
	l, err := link.Listen(cfg.Parent.Listen)
	if err != nil {
		return fmt.Errorf("parent.listen: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, len(cfg.Parent.Forward)+1)
	for _, f := range cfg.Parent.Forward {
		addr, ps, _ := strings.Cut(f, "=")
		port, _ := strconv.Atoi(ps)
		fl, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("parent.forward %s: %w", f, err)
		}
		fmt.Fprintf(stdout, "forward:  %s → enclave port %d\n", fl.Addr(), port)
		go func() { errc <- srv.Forward(ctx, fl, port) }()
	}
	fmt.Fprintf(stdout, "parent:   link on %s\n", l.Addr())
	go func() { errc <- srv.Serve(ctx, l) }()
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
}

// runEnclave runs the trusted side apart from its parent: every connection
// out goes through the parent's egress, allowed by the allowlist; the HTTP
// API is served on the connections the parent forwards in.
func runEnclave(ctx context.Context, args []string, stdout, stderr io.Writer, environ []string) error {
	fs := newFlagSet("enclave", `Runs the instance inside the enclave: it reaches the network only through
its parent (enclave.parent: vsock:3:PORT in production), dialing only the
relays, lightning.grpc and enclave.egress; the HTTP API is served on the
public port the parent forwards (enclave.ingress_port). Needs nostr.relays
and the lightning.* keys.`, stderr)
	load := configFlags(fs, environ, enclaveShorthands...)
	wait := fs.Duration("wait-config", 0, "wait this long for the -config file to appear (one written by enclaved devnet)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *wait > 0 {
		if f := fs.Lookup("config").Value.String(); f != "" {
			if err := waitForFile(ctx, f, *wait); err != nil {
				return err
			}
		}
	}
	all, err := load()
	if err != nil {
		return err
	}
	cfg := all.ForEnclave()
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
	log = log.With("side", "enclave")

	ingress := tunnel.NewIngress(int(cfg.Enclave.IngressPort))
	keeper := &link.Keeper{Dial: func(ctx context.Context) (net.Conn, error) { return link.DialAddr(ctx, cfg.Enclave.Parent) },
		Handler: ingress.Handle, Log: log.With("part", "link")}
	// The link outlives ctx: the instance's last backup at shutdown goes
	// through it, after ctx ended.
	lctx, lcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer lcancel()
	go keeper.Run(lctx)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// The instance logs to stderr (the enclave's console) and to the
	// parent's log sink; the link's own log stays on stderr, as it must
	// work while the link is down.
	if log, err = logging.New(io.MultiWriter(stderr, tunnel.NewLogWriter(lctx, keeper)), cfg.Log.Level, cfg.Log.Format); err != nil {
		return err
	}
	log = log.With("side", "enclave")
	egress := &tunnel.Egress{Link: keeper, Allow: egressAllowlist(cfg), Log: log.With("part", "egress")}
	// Inside the enclave there is no other way out: whatever uses the
	// default HTTP transport (the relay websockets) goes through egress.
	if t, ok := http.DefaultTransport.(*http.Transport); ok {
		t.DialContext = egress.DialContext
		t.Proxy = nil
	}
	if a := cfg.Enclave.ConnectProxy; a != "" {
		cl, err := net.Listen("tcp", a)
		if err != nil {
			return fmt.Errorf("enclave.connect_proxy: %w", err)
		}
		go tunnel.ServeConnect(ctx, cl, &tunnel.ConnectProxy{Dial: egress.DialContext, Log: log.With("part", "connect-proxy")})
	}
	ep, err := lnd.EndpointFromFiles(cfg.Lightning.GRPC, cfg.Lightning.TLSCert, cfg.Lightning.Macaroon)
	if err != nil {
		return err
	}
	ep.Dial = func(ctx context.Context, addr string) (net.Conn, error) { return egress.DialContext(ctx, "tcp", addr) }
	images := &deployer.Resolver{Transport: &http.Transport{DialContext: egress.DialContext, ForceAttemptHTTP2: true}}
	mctx, mcancel := context.WithTimeout(ctx, 30*time.Second)
	meta, err := tunnel.FetchMeta(mctx, keeper)
	mcancel()
	if err != nil {
		log.Warn("no metadata from the parent", "err", err)
	}
	// Containers' allowed connections leave through the parent too, under
	// the operator's container policy.
	containers := &tunnel.Egress{Link: keeper, Allow: cfg.Instance.ContainerEgress, Log: log.With("part", "container-egress")}
	m := &enclave.Main{Config: cfg.InstanceConfig, Version: Version, Log: log, Relays: cfg.Nostr.Relays, LND: ep, Images: images,
		HTTPListener: ingress.Listener(int(cfg.Enclave.IngressPort)), Meta: meta,
		ContainerDial: containers.DialContext, Egress: egress.Allow, Blobs: tunnel.Blobs{Link: keeper, Pace: blobPace(cfg)}}
	return runInstance(ctx, m, banner{Title: "enclaved enclave"}, stdout, nil)
}

// blobPace is each blob transfer's deadline (backup.blob_timeout,
// backup.blob_rate_kib).
func blobPace(cfg config.EnclaveConfig) tunnel.Pace {
	return tunnel.Pace{Timeout: cfg.Backup.BlobTimeout, Rate: cfg.Backup.BlobRateKiB << 10}
}

// egressAllowlist is enclave.egress plus the relays and the LND node.
func egressAllowlist(cfg config.EnclaveConfig) []string {
	allow := append([]string(nil), cfg.Enclave.Egress...)
	for _, r := range append(append([]string(nil), cfg.Nostr.Relays...), cfg.KeyStore.Relays...) {
		if hp, ok := nip.RelayHostPort(r); ok {
			allow = append(allow, hp)
		}
	}
	if cfg.HTTP.TLS == "acme" {
		dir := cfg.HTTP.ACMEDirectory
		if dir == "" {
			dir = acme.LetsEncryptURL
		}
		if u, err := url.Parse(dir); err == nil && u.Host != "" {
			port := u.Port()
			if port == "" {
				port = "443"
			}
			allow = append(allow, net.JoinHostPort(u.Hostname(), port))
		}
	}
	return append(allow, cfg.Lightning.GRPC)
}
