package enclave

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/enclaved/enclaved/attest"
	"github.com/enclaved/enclaved/backup"
	"github.com/enclaved/enclaved/billing"
	"github.com/enclaved/enclaved/billing/lnd"
	"github.com/enclaved/enclaved/config"
	"github.com/enclaved/enclaved/custody"
	"github.com/enclaved/enclaved/deployer/docker"
	"github.com/enclaved/enclaved/egressproxy"
	"github.com/enclaved/enclaved/link"
	"github.com/enclaved/enclaved/metrics"
	"github.com/enclaved/enclaved/store"
)

// Main is a whole instance process, in dev mode or in the enclave: Run
// opens what the instance needs (its attester; its key, from the data dir
// or, with backup.mode = keystore, from the key store with the state
// restored from the parent's backups; the database; the Lightning client;
// the Docker runtime; backups; the containers' egress confiner; the TLS
// config), builds the Instance, runs it until its context ends, and closes
// everything it opened. Its fields are what differs between a dev
// instance and one in an enclave; the command fills them (the dev relay
// and the regtest network are tooling: only their URLs and endpoints come
// in) and prints what Ready reports.
type Main struct {
	Config  config.InstanceConfig
	Version string
	Log     *slog.Logger

	// Relays are the instance's relays (nostr.relays, or the dev relay).
	Relays []string
	// LND is the operator's Lightning node (in the enclave, dialed
	// through the parent's egress).
	LND    lnd.Endpoint
	Images billing.ImageResolver
	// HTTPListener (optional) serves the HTTP API instead of listening
	// on http.listen (Parts.HTTPListener).
	HTTPListener net.Listener
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

	// MetricsListener (optional) serves the metrics instead of listening
	// on metrics.listen: in the enclave, the connections the parent
	// forwards to that port's number. Link (optional) is the enclave's
	// link to its parent, whose streams the metrics count.
	MetricsListener net.Listener
	Link            *link.Keeper

	// Ready (optional) is called once the instance is up.
	Ready func(ctx context.Context, up Up)
}

// Up is a running instance, as Main.Ready sees it.
type Up struct {
	Main     *Main
	Instance *Instance
	Key      Key
	Attester attest.Attester
	// HTTPAddr is the address the HTTP API listens on ("" if it does not
	// listen itself); MetricsAddr the metrics' ("" if none).
	HTTPAddr    string
	MetricsAddr string
}

// Run runs the instance until ctx ends; a canceled context is no error.
func (m *Main) Run(ctx context.Context) error {
	cfg, log := m.Config, m.Log
	attester, err := OpenAttester(cfg)
	if err != nil {
		return err
	}
	if c, ok := attester.(io.Closer); ok {
		defer c.Close()
	}
	// The keys and the state: from the key store and the parent's
	// backups (backup.mode = keystore), or the data dir (dev).
	var cust *custody.Custody
	var key Key
	if cfg.Backup.Mode == "keystore" {
		if cust, err = custody.Boot(ctx, cfg, attester, m.Blobs, m.Relays, m.Meta.Releases, log); err != nil {
			return err
		}
		defer cust.Close()
		key, err = ParseKey(cust.InstanceKey())
	} else {
		key, err = LoadOrCreateKey(filepath.Join(cfg.DataDir, "instance.key"))
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
	ln, err := lnd.New(m.LND)
	if err != nil {
		return err
	}
	defer ln.Close()
	subnets, err := netip.ParsePrefix(cfg.Instance.ContainerSubnets)
	if err != nil {
		return fmt.Errorf("instance.container_subnets: %w", err)
	}
	rt, err := docker.New(ctx, docker.Subnets(subnets))
	if err != nil {
		return err
	}
	defer rt.Close()

	var bk *backup.Backuper
	parts := Parts{DB: db, Key: key, Runtime: rt, Lightning: ln,
		Images: m.Images, Relays: m.Relays, Attester: attester, HTTPListener: m.HTTPListener, Egress: m.Egress}
	if parts.Metrics, parts.MetricsListener, err = m.openMetrics(); err != nil {
		return err
	}
	mx := parts.Metrics
	if parts.MetricsListener != nil {
		defer parts.MetricsListener.Close()
	}
	if cust != nil {
		bk = cust.Backuper(db, m.Blobs, key.Keys(), key.PublicKey())
		parts.Backup = bk
		parts.RestoreDir = cust.VolumeDir()
		if mx != nil {
			mx.Backups, bk.Observe = bk, mx.BackupDone
		}
	}
	if cfg.Enclave.ConfineContainers {
		c := &egressproxy.Manager{Dial: containerDial(cfg, m.ContainerDial), Log: log.With("part", "egressproxy"), Firewall: &egressproxy.Firewall{}}
		defer c.Close(context.Background())
		parts.Confiner = c
		if mx != nil {
			mx.Egress = c
		}
	}
	var in *Instance
	if parts.TLS, err = serverTLS(cfg, func(ctx context.Context, host string) bool { return in != nil && in.ServesHost(ctx, host) }); err != nil {
		return err
	}
	if in, err = NewInstance(config.Config{InstanceConfig: cfg}, parts, m.Version, time.Now, log); err != nil {
		return err
	}
	if bk != nil {
		stop, err := m.runBackups(ctx, in, bk, cust)
		if err != nil {
			return err
		}
		defer stop()
	}
	for _, err := range in.UseSignatures(ctx, m.Meta.Build, m.Meta.Instance, m.Meta.Releases) {
		log.Warn("a signature from the parent was skipped", "err", err)
	}
	err = in.Run(ctx, func(httpAddr string) {
		if m.Ready != nil {
			up := Up{Main: m, Instance: in, Key: key, Attester: attester, HTTPAddr: httpAddr}
			if ml := parts.MetricsListener; ml != nil && m.MetricsListener == nil {
				up.MetricsAddr = ml.Addr().String()
			}
			m.Ready(ctx, up)
		}
		log.Info("instance up", "instance", key, "db_version", db.Version)
	})
	log.Info("shutting down")
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// runBackups takes the first backup of a first boot, then runs bk and the
// key store's refresh until stop, which takes the last backup: backups
// outlive the instance's context, as the last one is taken once
// everything else stopped.
func (m *Main) runBackups(ctx context.Context, in *Instance, bk *backup.Backuper, cust *custody.Custody) (stop func(), err error) {
	// Checkpoints carry the instance's t tag.
	if bk.Mode, err = in.EventMode(ctx); err != nil {
		return nil, err
	}
	if cust.FirstBoot() {
		// A first boot is recorded before anything is sold.
		if _, err := bk.Backup(ctx); err != nil {
			return nil, fmt.Errorf("first backup: %w", err)
		}
	}
	// Backups keep the containers' volumes too.
	bk.Volumes = in.Deployer
	bk.VolumesSkipped = func(ctx context.Context, s backup.VolumeSkip) { in.Deployer.VolumesNotSaved(ctx, s.ID, s.Kept, s.Err) }
	bctx, bcancel := context.WithCancel(context.WithoutCancel(ctx))
	bdone := make(chan error, 1)
	go func() { bdone <- bk.Run(bctx) }()
	go cust.Refresh(bctx, bk)
	return func() {
		bcancel()
		if err := <-bdone; err != nil {
			m.Log.Error("last backup failed", "err", err)
		}
	}, nil
}

// openMetrics is the instance's metrics and their listener, with
// metrics.listen set: MetricsListener, or a listener on metrics.listen.
func (m *Main) openMetrics() (*metrics.Metrics, net.Listener, error) {
	if m.Config.Metrics.Listen == "" {
		return nil, nil, nil
	}
	l := m.MetricsListener
	if l == nil {
		var err error
		if l, err = net.Listen("tcp", m.Config.Metrics.Listen); err != nil {
			return nil, nil, fmt.Errorf("metrics.listen: %w", err)
		}
	}
	mx := metrics.New(m.Version)
	mx.Link, mx.Log = m.Link, m.Log.With("part", "metrics")
	return mx, l, nil
}
