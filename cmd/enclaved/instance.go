package main

import (
	"context"
	"crypto/tls"
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

	"github.com/enclaved/enclaved/egress"

	"github.com/enclaved/enclaved/attest"
	"github.com/enclaved/enclaved/backup"
	"github.com/enclaved/enclaved/billing/lnd"
	"github.com/enclaved/enclaved/config"
	"github.com/enclaved/enclaved/deployer"
	"github.com/enclaved/enclaved/deployer/docker"
	"github.com/enclaved/enclaved/egressproxy"
	"github.com/enclaved/enclaved/enclave"
	"github.com/enclaved/enclaved/frontend"
	"github.com/enclaved/enclaved/link"
	"github.com/enclaved/enclaved/store"
	"github.com/enclaved/enclaved/tunnel"
)

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
		if !egress.Allowed(policy, addr) {
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
	Banner       string
	// Hints (optional) are the lines printed after the banner for a
	// newcomer to paste (dev mode); without, one "try:" line.
	Hints func(ctx context.Context, cfg config.Config, in *enclave.Instance, npub, relay string) string
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
		bk = cust.backuper(db, o.Blobs, key)
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
	if in, err = enclave.NewInstance(cfg, parts, Version, time.Now, log); err != nil {
		return err
	}
	if bk != nil {
		// Checkpoints carry the instance's t tag.
		if bk.Mode, err = in.EventMode(ctx); err != nil {
			return err
		}
		if cust.state.Last == nil {
			// A first boot is recorded before anything is sold.
			if _, err := bk.Backup(ctx); err != nil {
				return fmt.Errorf("first backup: %w", err)
			}
		}
		// Backups keep the containers' volumes too. They outlive the
		// instance's context: the last one is taken once everything
		// else stopped.
		bk.Volumes = in.Deployer
		bk.VolumesSkipped = func(ctx context.Context, s backup.VolumeSkip) { in.Deployer.VolumesNotSaved(ctx, s.ID, s.Kept, s.Err) }
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
	for _, err := range in.UseSignatures(ctx, o.Meta.Build, o.Meta.Instance, o.Meta.Releases) {
		log.Warn("a signature from the parent was skipped", "err", err)
	}
	err = in.Run(ctx, func(httpAddr string) {
		// One write, so no log line lands inside it.
		var sb strings.Builder
		if attest.IsDev(attester) {
			fmt.Fprintf(&sb, "%s (dev attestation; not a Nitro enclave)\n", o.Banner)
		} else {
			fmt.Fprintf(&sb, "%s (%s attestation)\n", o.Banner, attester.Mode())
		}
		fmt.Fprintf(&sb, "  npub:     %s\n", key.Npub())
		for _, r := range urls {
			fmt.Fprintf(&sb, "  relay:    %s\n", r)
		}
		if o.HTTPListener != nil && cfg.HTTP.PublicURL != "" {
			fmt.Fprintf(&sb, "  http:     %s/api/v1/instance\n", strings.TrimSuffix(cfg.HTTP.PublicURL, "/"))
		} else if httpAddr != "" {
			fmt.Fprintf(&sb, "  http:     http://%s/api/v1/instance\n", httpAddr)
		}
		fmt.Fprintf(&sb, "  data dir: %s\n", cfg.DataDir)
		if attest.IsDev(attester) {
			fmt.Fprintf(&sb, "  dev root: %s\n", filepath.Join(cfg.DataDir, "dev-root.pem"))
		}
		if cfg.HTTP.TLS == "dev" {
			fmt.Fprintf(&sb, "  dev CA:   %s\n", filepath.Join(cfg.DataDir, "dev-ca.pem"))
		}
		if o.Hints != nil {
			sb.WriteString(o.Hints(ctx, cfg, in, key.Npub(), urls[0]))
		} else {
			fmt.Fprintf(&sb, "try:       enclaved dm -relay %s %s help\n", urls[0], key.Npub())
		}
		io.WriteString(stdout, sb.String())
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
