package enclave

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"time"

	"golang.org/x/crypto/acme"

	"github.com/enclaved/enclaved/billing/lnd"
	"github.com/enclaved/enclaved/config"
	"github.com/enclaved/enclaved/images"
	"github.com/enclaved/enclaved/internal/logging"
	"github.com/enclaved/enclaved/link"
	"github.com/enclaved/enclaved/link/linknet"
	"github.com/enclaved/enclaved/nip"
	"github.com/enclaved/enclaved/tunnel"
)

// RunApart runs an instance inside the enclave, apart from its parent
// (enclaved enclave): it keeps the link to the parent (enclave.parent),
// through which every connection out goes, allowed by the allowlist (the
// relays, lightning.grpc, enclave.egress; containers' under
// instance.container_egress), public connections come in
// (enclave.ingress_port), the operator's scrapes too (on the port of
// metrics.listen), backups are kept and log lines go; then it runs a Main
// with those parts until ctx ends. console is the enclave's own console
// (stderr); ready is Main.Ready.
func RunApart(ctx context.Context, cfg config.EnclaveConfig, version string, console io.Writer, ready func(context.Context, Up)) error {
	log, err := logging.New(console, cfg.Log.Level, cfg.Log.Format)
	if err != nil {
		return err
	}
	log = log.With("side", "enclave")

	// The metrics are served on the ingress port of metrics.listen's
	// number, apart from the public one: the parent forwards its own
	// metrics.listen there.
	ports := []int{int(cfg.Enclave.IngressPort)}
	if cfg.Metrics.Listen != "" {
		ports = append(ports, cfg.Metrics.Port())
	}
	ingress := tunnel.NewIngress(ports...)
	keeper := &link.Keeper{Dial: func(ctx context.Context) (net.Conn, error) { return linknet.DialAddr(ctx, cfg.Enclave.Parent) },
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
	if log, err = logging.New(io.MultiWriter(console, tunnel.NewLogWriter(lctx, keeper)), cfg.Log.Level, cfg.Log.Format); err != nil {
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
	images := &images.Resolver{Transport: &http.Transport{DialContext: egress.DialContext, ForceAttemptHTTP2: true}}
	mctx, mcancel := context.WithTimeout(ctx, 30*time.Second)
	meta, err := tunnel.FetchMeta(mctx, keeper)
	mcancel()
	if err != nil {
		log.Warn("no metadata from the parent", "err", err)
	}
	// Containers' allowed connections leave through the parent too, under
	// the operator's container policy.
	containers := &tunnel.Egress{Link: keeper, Allow: cfg.Instance.ContainerEgress, Log: log.With("part", "container-egress")}
	m := &Main{Config: cfg.InstanceConfig, Version: version, Log: log, Relays: cfg.Nostr.Relays, LND: ep, Images: images,
		HTTPListener: ingress.Listener(int(cfg.Enclave.IngressPort)), Meta: meta,
		ContainerDial: containers.DialContext, Egress: egress.Allow, Blobs: tunnel.Blobs{Link: keeper, Pace: blobPace(cfg)},
		Link: keeper, Ready: ready}
	if cfg.Metrics.Listen != "" {
		m.MetricsListener = ingress.Listener(cfg.Metrics.Port())
	}
	return m.Run(ctx)
}

// blobPace is each blob transfer's deadline (backup.blob_timeout,
// backup.blob_rate_kib).
func blobPace(cfg config.EnclaveConfig) tunnel.Pace {
	return tunnel.Pace{Timeout: cfg.Backup.BlobTimeout, Rate: cfg.Backup.BlobRateKiB << 10}
}

// egressAllowlist is enclave.egress plus the relays (those it announces
// to too) and the LND node.
func egressAllowlist(cfg config.EnclaveConfig) []string {
	allow := append([]string(nil), cfg.Enclave.Egress...)
	for _, r := range slices.Concat(cfg.Nostr.Relays, cfg.Nostr.AnnounceRelays, cfg.KeyStore.Relays) {
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
