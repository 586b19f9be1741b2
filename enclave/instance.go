package enclave

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/hf/nitrite"
	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/attest"
	"github.com/enclaved/enclaved/billing"
	"github.com/enclaved/enclaved/bot"
	"github.com/enclaved/enclaved/config"
	"github.com/enclaved/enclaved/deployer"
	"github.com/enclaved/enclaved/hostrouter"
	"github.com/enclaved/enclaved/httpapi"
	"github.com/enclaved/enclaved/internal/crashpoint"
	"github.com/enclaved/enclaved/metrics"
	"github.com/enclaved/enclaved/nip"
	"github.com/enclaved/enclaved/publish"
	"github.com/enclaved/enclaved/records"
	"github.com/enclaved/enclaved/store"
	"github.com/enclaved/enclaved/zaps"
)

// Parts are the instance's connections to the outside world, opened by the
// caller (dev mode, or the enclave through the parent's egress).
type Parts struct {
	DB        *store.DB
	Key       Key
	Runtime   deployer.Runtime
	Lightning billing.Lightning
	Images    billing.ImageResolver
	Relays    []string
	// Attester (optional) attests the instance key; its documents become
	// the tee_root of container status events.
	Attester attest.Attester
	// HTTPListener (optional) serves the HTTP API instead of listening on
	// http.listen: in the enclave, the public connections the parent
	// forwards in. http.public_url must then say where clients reach it.
	HTTPListener net.Listener
	// Egress is the allowlist of the instance's own connections, for the
	// announcement; nil: they are not confined (dev mode).
	Egress []string
	// Confiner (optional) confines containers' egress to what their
	// renters asked for (egressproxy.Manager); nil leaves them on the
	// runtime's network.
	Confiner deployer.Confiner
	// TLS (optional) terminates TLS on the HTTP listener (frontend: dev
	// CA or ACME); the public URL is then https.
	TLS *tls.Config
	// Backup (optional) saves the state outside the enclave
	// (backup.Backuper): Changed after money events, Sync before an
	// invoice is handed out.
	Backup Backup
	// RestoreDir holds container volumes restored from a backup
	// (deployer.Config.RestoreDir); "": none.
	RestoreDir string
	// Metrics (optional) are served on MetricsListener, never on the
	// HTTP listener; the instance has them read its state and count the
	// bot's commands.
	Metrics         *metrics.Metrics
	MetricsListener net.Listener
}

// Backup is what the instance asks of its backups.
type Backup interface {
	Changed()
	Sync(ctx context.Context) error
}

// Instance is a whole running instance: bot, billing, deployer, metering
// and the HTTP API, wired together.
type Instance struct {
	Deployer *deployer.Deployer
	Quoter   *billing.Quoter
	// Invoices issues and cancels every invoice of the instance.
	Invoices *billing.Invoices
	Bot      *bot.Bot
	// Zaps is set once Run listens (its URLs need the HTTP address).
	Zaps *zaps.Service
	// Hooks run when credits, changes and notices happen (register).
	Hooks Hooks
	// TEERoot (optional) returns the instance's kind-23793 attestation
	// event as JSON, for the tee_root tag of container status events.
	TEERoot func(ctx context.Context) (string, error)

	receipts *publish.Receipts
	// The mutex protects the following elements.
	mu          sync.Mutex
	zapNotices  map[string]time.Time // container → last zap notice to its owner
	rootJSON    string               // cached kind-23793 event
	rootExpires time.Time
	rootDoc     nitrite.Document
	releases    []nostr.Event // maintainers' release signatures, embedded in announcements
	// build and launch are the builder's (PCR8) and launcher's (PCR4)
	// signatures, embedded in announcements when set (ID empty if not).
	build, launch nostr.Event // its document, for the announcement's PCRs

	cfg     config.Config
	parts   Parts
	version string
	// dev: the attestation is a dev one (or none), so every event the
	// instance publishes carries t=dev and its API says dev: true
	// (attest.IsDev decides).
	dev bool
	now func() time.Time
	log *slog.Logger
}

// NewInstance wires an instance from its configuration and parts. now is
// the clock (time.Now in production).
func NewInstance(cfg config.Config, p Parts, version string, now func() time.Time, log *slog.Logger) (*Instance, error) {
	in := &Instance{cfg: cfg, parts: p, version: version, now: now, log: log,
		Invoices: &billing.Invoices{DB: p.DB, Lightning: p.Lightning, Now: now, Log: log.With("part", "invoices")},
		dev:      attest.IsDev(p.Attester),
		receipts: publish.NewReceipts(log), zapNotices: map[string]time.Time{}}
	in.Invoices.Durable = in.durable()
	unit := records.Unit{
		NanoCPUs: cfg.Unit.MilliCPUs * 1_000_000, MemoryBytes: cfg.Unit.MemoryMiB << 20,
		Pids: cfg.Unit.Pids, DiskBytes: cfg.Unit.DiskMiB << 20,
	}
	in.Deployer = deployer.New(p.DB, p.Runtime, deployer.Config{
		Instance: p.Key.PublicKey(), Unit: unit, CapacityUnits: cfg.Instance.CapacityUnits,
		LowBalance: cfg.Pricing.LowBalance, Retention: cfg.Pricing.Retention,
		EgressPolicy: cfg.Instance.ContainerEgress, Confiner: p.Confiner, Durable: in.durable(),
		RestoreDir: p.RestoreDir, Links: in.links, PullTimeout: cfg.Instance.PullTimeout, Invoices: in.Invoices,
	}, now, log.With("part", "deployer"))
	in.Deployer.OnEvent = append(in.Deployer.OnEvent, in.event)
	pricing := billing.Pricing{PriceMsatPerUnitHour: cfg.Pricing.MsatPerUnitHour, QuoteExpiry: cfg.Pricing.QuoteExpiry,
		OpenQuotes: cmp.Or(cfg.Pricing.OpenQuotes, 4*cfg.Instance.CapacityUnits), OpenQuotesPerSender: cfg.Pricing.OpenQuotesPerSender,
		OpenTopups: cfg.Pricing.OpenTopups}
	in.Quoter = &billing.Quoter{Records: in.Deployer.Records, Images: p.Images, Invoices: in.Invoices, Pricing: pricing,
		Unit: unit, CapacityUnits: cfg.Instance.CapacityUnits, EgressPolicy: cfg.Instance.ContainerEgress, Now: now,
		ContainerKey: func(id string) string { return p.Key.ContainerKey(id).PublicKey() }}
	b, err := bot.New(p.Key.Keys(), p.DB, in.Deployer, in.Quoter, bot.Config{
		Relays: p.Relays, Name: cfg.Instance.Name, About: cfg.Instance.About,
		Pricing: pricing, Retention: cfg.Pricing.Retention, Rate: int(cfg.Nostr.CommandsPerMinute), Window: time.Minute,
		Dev: in.dev, Reachable: reachable(p.Egress), Instance: in.info, Observe: observe(p.Metrics),
	}, now, log.With("part", "bot"))
	if err != nil {
		return nil, err
	}
	in.Bot = b
	for _, f := range cfg.Instance.Releases {
		rel, err := loadSigned("instance.releases", f, nip.KindRelease)
		if err != nil {
			return nil, err
		}
		in.releases = append(in.releases, rel)
	}
	if f := cfg.Instance.BuildSignature; f != "" {
		if in.build, err = loadSigned("instance.build_signature", f, nip.KindBuildSignature, nip.KindBuildSignatureLegacy); err != nil {
			return nil, err
		}
	}
	if f := cfg.Instance.InstanceSignature; f != "" {
		if in.launch, err = loadSigned("instance.instance_signature", f, nip.KindInstanceSignature, nip.KindInstanceSignatureLegacy); err != nil {
			return nil, err
		}
	}
	if p.Attester != nil {
		in.TEERoot = in.teeRoot
	}
	in.useMetrics()
	in.register()
	return in, nil
}

// teeRootRefresh: a cached attestation event is replaced this long before
// its document's certificate expires.
const teeRootRefresh = 30 * time.Minute

// teeRoot returns the instance's kind-23793 attestation event as JSON,
// attesting anew before the previous document's certificate expires.
func (in *Instance) teeRoot(ctx context.Context) (string, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	now := in.now()
	if in.rootJSON != "" && now.Before(in.rootExpires.Add(-teeRootRefresh)) {
		return in.rootJSON, nil
	}
	pub, err := hex.DecodeString(in.parts.Key.PublicKey())
	if err != nil {
		return "", err
	}
	doc, err := in.parts.Attester.Attest(ctx, pub, nil, nil)
	if err != nil {
		return "", fmt.Errorf("attest: %w", err)
	}
	d, expires, err := attest.Inspect(doc)
	if err != nil {
		return "", err
	}
	evt := nip.TEERoot(doc, in.mode(d), expires, nostr.Timestamp(now.Unix()))
	if err := in.parts.Key.Keys().SignEvent(ctx, &evt); err != nil {
		return "", err
	}
	b, err := json.Marshal(evt)
	if err != nil {
		return "", err
	}
	in.rootJSON, in.rootExpires, in.rootDoc = string(b), expires, d
	return in.rootJSON, nil
}

// mode is the t tag of the instance's events (attest.EventMode) under
// its attestation document d.
func (in *Instance) mode(d nitrite.Document) string {
	return attest.EventMode(in.parts.Attester, d.PCRs[0])
}

// EventMode is the t tag of everything the instance signs (dev, debug or
// prod), attesting its key if it has not yet.
func (in *Instance) EventMode(ctx context.Context) (string, error) {
	if in.parts.Attester == nil {
		return attest.EventMode(nil, nil), nil
	}
	if _, err := in.teeRoot(ctx); err != nil {
		return "", err
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.mode(in.rootDoc), nil
}

// Run reconciles the runtime with the database, then runs the settlement
// watcher, the metering loop, the bot and the HTTP API until ctx ends.
// ready (optional) is called with the HTTP address once everything listens.
func (in *Instance) Run(ctx context.Context, ready func(httpAddr string)) error {
	// The HTTP listener first: lightning addresses are named after it,
	// and the notices of the reconcile name them.
	addr := ""
	l := in.parts.HTTPListener
	if l != nil {
		addr = l.Addr().String()
	} else if in.cfg.HTTP.Listen != "" {
		var err error
		if l, err = net.Listen("tcp", in.cfg.HTTP.Listen); err != nil {
			return fmt.Errorf("http.listen: %w", err)
		}
		addr = l.Addr().String()
	}
	err := in.setupZaps(addr)
	if err == nil {
		err = in.Deployer.Reconcile(ctx)
	}
	if err != nil {
		if l != nil {
			l.Close()
		}
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 8) // one per goroutine below that sends

	ledger := billing.NewLedger(in.parts.DB)

	wg.Go(func() {
		errc <- billing.WatchSettlements(ctx, in.parts.Lightning, ledger, in.log.With("part", "billing"), func(c billing.Credit) {
			crashpoint.Hit("after-credit")
			in.changed()
			wg.Go(func() { in.credited(ctx, c) })
		})
	})
	wg.Go(func() { errc <- in.meter(ctx) })
	wg.Go(func() { in.prune(ctx) })
	wg.Go(func() { errc <- in.Deployer.Watch(ctx) })
	wg.Go(func() { errc <- in.Bot.Run(ctx) })
	wg.Go(func() { in.receipts.Run(ctx) })
	wg.Go(func() { in.profiles().Run(ctx) })
	if in.parts.Attester != nil {
		wg.Go(func() { in.announcer().Run(ctx) })
	}

	var srv *http.Server
	if l != nil {
		router := &hostrouter.Router{Host: in.Zaps.BaseURL.Hostname(),
			API:    httpapi.New(in.info(), in.Deployer.Records, in.Deployer, in.now, in.Zaps.Routes, in.pages().Routes),
			Lookup: in.containerHTTP}
		srv, l = NewHTTPServer(router, l, in.parts.TLS, DefaultHTTPLimits(), in.log.With("part", "http"))
		wg.Go(func() {
			if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("http: %w", err)
			}
		})
	}
	if mx, ml := in.parts.Metrics, in.parts.MetricsListener; mx != nil && ml != nil {
		wg.Go(func() {
			if err := mx.Serve(ctx, ml); err != nil {
				errc <- fmt.Errorf("metrics: %w", err)
			}
		})
	}
	if ready != nil {
		ready(addr)
	}
	select {
	case <-ctx.Done():
	case err = <-errc:
		if errors.Is(err, context.Canceled) {
			err = nil
		}
	}
	cancel()
	if srv != nil {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		srv.Shutdown(sctx)
		scancel()
	}
	wg.Wait()
	return err
}

func (in *Instance) info() httpapi.Instance {
	return httpapi.Instance{
		Pubkey: in.parts.Key.PublicKey(), Npub: in.parts.Key.Npub(), Relays: in.parts.Relays, Version: in.version,
		Unit:            httpapi.UnitJSON(in.Deployer.Unit(), in.Deployer.DiskLimits()),
		MsatPerUnitHour: in.cfg.Pricing.MsatPerUnitHour, CapacityUnits: in.Deployer.Capacity(), Dev: in.dev,
	}
}

// meter runs Deployer.Tick whenever it is due (at least every minute, and
// when a container starts metering). It does nothing else: billing never
// waits for the node or a prune.
func (in *Instance) meter(ctx context.Context) error {
	for {
		next, err := in.Deployer.Tick(ctx)
		if err != nil && ctx.Err() == nil {
			in.log.Error("metering tick failed", "err", err)
		}
		in.changed() // debits
		wait := min(max(next.Sub(in.now()), 10*time.Millisecond), time.Minute)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-in.Deployer.Wake():
			t.Stop()
		case <-t.C:
		}
	}
}

// pruneEvery is how often what strangers leave behind is pruned: seen
// events, and unpaid invoices an hour past their expiry (at most
// pruneBudget of the node's time a pass).
const (
	pruneEvery  = 10 * time.Minute
	pruneBudget = 5 * time.Minute
)

// prune forgets the bot's old seen events and cancels and deletes expired
// unpaid invoices, every pruneEvery, on its own goroutine.
func (in *Instance) prune(ctx context.Context) {
	t := time.NewTicker(pruneEvery)
	defer t.Stop()
	for {
		if err := in.Bot.PruneSeen(ctx); err != nil && ctx.Err() == nil {
			in.log.Warn("pruning seen events failed", "err", err)
		}
		pctx, cancel := context.WithTimeout(ctx, pruneBudget)
		n, err := in.Invoices.PruneAllExpired(pctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			in.log.Warn("pruning expired invoices failed", "pruned", n, "err", err)
		} else if n > 0 {
			in.log.Info("expired invoices pruned", "count", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// durable is Parts.Backup's Sync, or nil without backups.
func (in *Instance) durable() func(context.Context) error {
	if in.parts.Backup == nil {
		return nil
	}
	return in.parts.Backup.Sync
}
