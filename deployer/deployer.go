package deployer

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/enclaved/enclaved/egress"
	"github.com/enclaved/enclaved/records"

	"github.com/enclaved/enclaved/billing"
	"github.com/enclaved/enclaved/store"
)

// Config is the deployer's part of the instance configuration.
type Config struct {
	Instance      string // hex pubkey, labelled on every container
	Unit          records.Unit
	CapacityUnits int64
	// LowBalance: the owner is told once when less running time than this
	// is left.
	LowBalance time.Duration
	// Retention: how long a paused container's data is kept.
	Retention time.Duration
	// EgressPolicy is the operator's bound on what renters may ask their
	// containers to reach (egress.Allowed patterns); empty: nothing.
	EgressPolicy []string
	// Confiner confines each container's egress to its plan; nil leaves
	// containers on the runtime's own network (dev mode on a shared host).
	Confiner Confiner
	// Durable (optional) returns once everything committed so far is
	// saved outside the enclave (backup.Backuper.Sync): an invoice is
	// handed out only after its record would survive a restart.
	Durable func(ctx context.Context) error
	// RestoreDir holds container volumes restored from a backup, one
	// ID.tar each, filled into the container when it is created again
	// (see ExportVolumes); "": none.
	RestoreDir string
	// PullTimeout bounds one image pull (default 10 min); a pull that
	// takes longer fails the launch, keeping the balance for a retry.
	PullTimeout time.Duration
	// Invoices (optional) cancels a container's open invoices when it is
	// removed or its quote withdrawn (billing.Invoices).
	Invoices OpenInvoices
	// Links (optional) says where a container is reached from outside:
	// its lightning address and the URL of its HTTP port.
	Links func(records.Record) Links
}

// OpenInvoices cancels a container's unpaid invoices at the node
// (billing.Invoices).
type OpenInvoices interface {
	CancelOpen(ctx context.Context, containerID string) error
	// Forget cancels and deletes every invoice of a never-paid quote.
	Forget(ctx context.Context, containerID string) error
}

// cancelOpen cancels container id's open invoices, if it has any: after
// it is removed, no payment can reach it (one that raced the removal is
// recorded unclaimed by billing).
func (d *Deployer) cancelOpen(ctx context.Context, id string) {
	if d.cfg.Invoices == nil {
		return
	}
	if err := d.cfg.Invoices.CancelOpen(ctx, id); err != nil {
		d.log.Warn("cancelling open invoices", "container", id, "err", err)
	}
}

// Links are where a container is reached from outside the instance.
type Links struct {
	Address string // lightning address (LUD-16) and NIP-05 name; "" while it cannot be zapped
	Page    string // URL its HTTP port is served at; "" unless it runs and serves one
}

// Links says where rec is reached from outside the instance.
func (d *Deployer) Links(rec records.Record) Links {
	if d.cfg.Links == nil {
		return Links{}
	}
	return d.cfg.Links(rec)
}

// Durable returns once everything committed so far is saved outside the
// enclave (Config.Durable; at once if unset), waiting at most a minute.
func (d *Deployer) Durable(ctx context.Context) error {
	if d.cfg.Durable == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, durableTimeout)
	defer cancel()
	if err := d.cfg.Durable(ctx); err != nil {
		return fmt.Errorf("saving the instance's state: %w", err)
	}
	return nil
}

// durableTimeout bounds the wait for a backup before an invoice is given.
const durableTimeout = time.Minute

// Deployer drives containers through their lifecycle. Lifecycle changes of
// one container are serialised; the database holds the truth and every
// runtime call is repeatable, so a crash at any step resumes at Reconcile.
type Deployer struct {
	// Records are the containers as stored; only through them does the
	// deployer change one.
	Records *records.Store

	db     *store.DB
	rt     Runtime
	ledger *billing.Ledger
	cfg    Config
	now    func() time.Time
	log    *slog.Logger

	// OnEvent are called, in order, with every event of a container's
	// life (the bot tells owners, the instance asks for a backup). Set
	// them before the deployer runs.
	OnEvent []func(context.Context, Event)

	wake chan struct{}

	// locks serialise each container's lifecycle changes; admit makes a
	// launch's capacity check and the state that takes the units one step.
	locks idLocks
	admit sync.Mutex
	// images serialise, per pinned image, a launch's pull and create
	// against the removal of the image once no container uses it.
	images idLocks

	idleMu sync.Mutex
	idle   map[string]time.Time // containers not running, since when (see Idle)
}

// New returns a deployer. now is the clock (time.Now in production).
func New(db *store.DB, rt Runtime, cfg Config, now func() time.Time, log *slog.Logger) *Deployer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Deployer{Records: records.New(db, now), db: db, rt: rt, ledger: billing.NewLedger(db), cfg: cfg, now: now, log: log,
		wake: make(chan struct{}, 1), idle: map[string]time.Time{}}
}

// Wake receives a value whenever a container starts metering, so the
// metering loop can recompute when its next Tick is due.
func (d *Deployer) Wake() <-chan struct{} { return d.wake }

func (d *Deployer) woke() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Unit returns the resources of one unit.
func (d *Deployer) Unit() records.Unit { return d.cfg.Unit }

// Capacity returns the instance's capacity in units.
func (d *Deployer) Capacity() int64 { return d.cfg.CapacityUnits }

// EgressText says in words what renters may ask their containers to
// reach, and whether that is enforced (confined) or the containers share
// the runtime's network (a dev instance).
func (d *Deployer) EgressText() string {
	text := "none"
	if p := d.cfg.EgressPolicy; len(p) > 0 {
		text = strings.Join(p, ", ")
	}
	if d.cfg.Confiner == nil {
		text += "; not enforced on this dev instance"
	}
	return text
}

// DiskLimits says whether the runtime enforces the units' disk size.
func (d *Deployer) DiskLimits() bool { return d.rt.DiskLimits() }

// plan is the record's egress plan; ExtraHosts name its hosts only where
// the proxy maps them back (unconfined containers resolve names as usual).
func (d *Deployer) plan(rec records.Record) (egress.Plan, []string, error) {
	p, err := egress.NewPlan(rec.Egress)
	if err != nil || d.cfg.Confiner == nil {
		return p, nil, err
	}
	return p, p.ExtraHosts(), nil
}

// confine starts the container's egress proxy (again, after a restart of
// the instance); it does nothing without a confiner.
func (d *Deployer) confine(ctx context.Context, rec records.Record) error {
	if d.cfg.Confiner == nil {
		return nil
	}
	p, _, err := d.plan(rec)
	if err != nil {
		return err
	}
	n, err := d.rt.Network(ctx, RuntimeName(rec.ID))
	if err != nil {
		return err
	}
	return d.cfg.Confiner.Confine(ctx, RuntimeName(rec.ID), n.Bridge, n.Gateway, p)
}

// Address is where the container's HTTP port is reached from the instance
// (its address on its own network); ok is false if it serves none or is
// not running.
func (d *Deployer) Address(ctx context.Context, rec records.Record) (string, bool) {
	if rec.HTTPPort == 0 || rec.State != records.StateRunning {
		return "", false
	}
	n, err := d.rt.Network(ctx, RuntimeName(rec.ID))
	if err != nil || !n.Container.IsValid() {
		return "", false
	}
	return netip.AddrPortFrom(n.Container, uint16(rec.HTTPPort)).String(), true
}

// FreeUnits is the capacity not held by any container.
func (d *Deployer) FreeUnits(ctx context.Context) (int64, error) {
	used, err := d.Records.UsedUnits(ctx, "")
	return d.cfg.CapacityUnits - used, err
}
