package deployer

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/enclaved/enclaved/egress"

	"github.com/enclaved/enclaved/billing"
	"github.com/enclaved/enclaved/nip"
	"github.com/enclaved/enclaved/store"
)

// Container states, as stored.
const (
	StateQuoted   = "quoted"   // invoice issued, not paid
	StatePaid     = "paid"     // credited, waiting to start (or for capacity)
	StateRunning  = "running"  // metered
	StatePaused   = "paused"   // balance reached zero; data kept for the retention window
	StateStopped  = "stopped"  // stopped by its owner; data kept
	StateRemoved  = "removed"  // gone from the runtime
	StateFailed   = "failed"   // could not be started; balance kept
	StateExpired  = "expired"  // quote never paid
	StateExited   = "exited"   // stopped on its own (exit, OOM kill, gone from the runtime); not charged; data kept for the retention window
	StateStarting = "starting" // being pulled and created
)

// Unit is the resources of one unit; a container gets units × Unit.
type Unit struct {
	NanoCPUs    int64
	MemoryBytes int64
	Pids        int64
	DiskBytes   int64
}

// Config is the deployer's part of the instance configuration.
type Config struct {
	Instance      string // hex pubkey, labelled on every container
	Unit          Unit
	CapacityUnits int64
	// LowBalance: the owner is told once when less running time than this
	// is left.
	LowBalance time.Duration
	// Retention: how long a paused container's data is kept.
	Retention time.Duration
	// ContainerKey returns the hex public key of a container's own Nostr
	// identity, derived from the instance key (enclave.Key.ContainerKey).
	ContainerKey func(id string) string
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
	Links func(Record) Links
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
func (d *Deployer) Links(rec Record) Links {
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

// Notice is a message for a container's owner.
type Notice struct {
	ContainerID string
	Owner       string
	Channel     string
	Text        string
}

// Deployer drives containers through their lifecycle. Lifecycle changes of
// one container are serialised; the database holds the truth and every
// runtime call is repeatable, so a crash at any step resumes at Reconcile.
type Deployer struct {
	db     *store.DB
	rt     Runtime
	ledger *billing.Ledger
	cfg    Config
	now    func() time.Time
	log    *slog.Logger
	notify func(context.Context, Notice)

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

// New returns a deployer. now is the clock (time.Now in production); notify
// (optional) tells owners what happened to their containers.
func New(db *store.DB, rt Runtime, cfg Config, now func() time.Time, log *slog.Logger, notify func(context.Context, Notice)) *Deployer {
	if notify == nil {
		notify = func(context.Context, Notice) {}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.ContainerKey == nil {
		cfg.ContainerKey = func(string) string { return "" }
	}
	return &Deployer{db: db, rt: rt, ledger: billing.NewLedger(db), cfg: cfg, now: now, log: log, notify: notify,
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
func (d *Deployer) Unit() Unit { return d.cfg.Unit }

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

// Record is a container's stored state.
type Record struct {
	ID, Name, Owner, Channel, Image, ImageRef string
	Pubkey                                    string // the container's own identity (hex)
	Units, PriceMsat, BalanceMsat             int64
	State, Reason, DockerID                   string
	Env                                       [][2]string
	Egress                                    []string  // "host:port" the container may reach
	HTTPPort                                  int       // served by host name; 0: none
	CommandAt                                 time.Time // when the last owner's command carried out was sent (to the second)
	HasVolumes                                bool
	PausedAt                                  time.Time
	RunMs, ChargedMsat                        int64
	CreatedAt                                 time.Time
	RunningSince                              time.Time // start of the not yet charged stretch; zero unless running
}

// PaidUntil is when a running container's balance runs out; zero if it is
// not running.
func (r Record) PaidUntil() time.Time {
	if r.RunningSince.IsZero() {
		return time.Time{}
	}
	return r.RunningSince.Add(r.Left())
}

// LeftAt is the running time left at now: for a running container, Left
// less what ran since the last charge.
func (r Record) LeftAt(now time.Time) time.Duration {
	if r.RunningSince.IsZero() {
		return r.Left()
	}
	return max(r.PaidUntil().Sub(now), 0)
}

// Npub is the container's own identity, bech32.
func (r Record) Npub() string {
	if r.Pubkey == "" {
		return ""
	}
	return nip.Npub(r.Pubkey)
}

// Left is the running time the balance still pays for.
func (r Record) Left() time.Duration {
	return billing.TimeLeft(billing.Rate(r.Units, r.PriceMsat), r.BalanceMsat, r.ChargedMsat, r.RunMs)
}

// ErrNotFound is returned for an unknown container.
var ErrNotFound = errors.New("no such container")

// Get reads a container record.
func (d *Deployer) Get(ctx context.Context, id string) (Record, error) {
	var r Record
	var env, egress string
	var paused, since sql.NullInt64
	var created, commandAt int64
	err := d.db.QueryRowContext(ctx, `SELECT id, name, owner, channel, image, image_ref, pubkey, units, price_msat, balance_msat,
		state, state_reason, docker_id, env, paused_at, run_ms, charged_msat, image_volumes, created_at, running_since, egress, http_port, command_at
		FROM containers WHERE id = ?`, id).Scan(
		&r.ID, &r.Name, &r.Owner, &r.Channel, &r.Image, &r.ImageRef, &r.Pubkey, &r.Units, &r.PriceMsat, &r.BalanceMsat,
		&r.State, &r.Reason, &r.DockerID, &env, &paused, &r.RunMs, &r.ChargedMsat, &r.HasVolumes, &created, &since, &egress, &r.HTTPPort, &commandAt)
	r.CreatedAt = time.UnixMilli(created)
	if commandAt > 0 {
		r.CommandAt = time.Unix(commandAt, 0)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return r, ErrNotFound
	}
	if err != nil {
		return r, err
	}
	if paused.Valid {
		r.PausedAt = time.UnixMilli(paused.Int64)
	}
	if since.Valid {
		r.RunningSince = time.UnixMilli(since.Int64)
	}
	if err := json.Unmarshal([]byte(env), &r.Env); err != nil {
		return r, fmt.Errorf("container %s env: %w", id, err)
	}
	if err := json.Unmarshal([]byte(egress), &r.Egress); err != nil {
		return r, fmt.Errorf("container %s egress: %w", id, err)
	}
	return r, nil
}

// plan is the record's egress plan; ExtraHosts name its hosts only where
// the proxy maps them back (unconfined containers resolve names as usual).
func (d *Deployer) plan(rec Record) (egress.Plan, []string, error) {
	p, err := egress.NewPlan(rec.Egress)
	if err != nil || d.cfg.Confiner == nil {
		return p, nil, err
	}
	return p, p.ExtraHosts(), nil
}

// confine starts the container's egress proxy (again, after a restart of
// the instance); it does nothing without a confiner.
func (d *Deployer) confine(ctx context.Context, rec Record) error {
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
func (d *Deployer) Address(ctx context.Context, rec Record) (string, bool) {
	if rec.HTTPPort == 0 || rec.State != StateRunning {
		return "", false
	}
	n, err := d.rt.Network(ctx, RuntimeName(rec.ID))
	if err != nil || !n.Container.IsValid() {
		return "", false
	}
	return netip.AddrPortFrom(n.Container, uint16(rec.HTTPPort)).String(), true
}

func (d *Deployer) setState(ctx context.Context, id, state, reason string, extra func(*sql.Tx) error) error {
	tx, err := d.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if extra != nil {
		if err := extra(tx); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE containers SET state = ?, state_reason = ?, updated_at = ? WHERE id = ?`,
		state, reason, d.now().UnixMilli(), id); err != nil {
		return err
	}
	return tx.Commit()
}

// usedUnits counts the units held by containers that run or may resume.
func (d *Deployer) usedUnits(ctx context.Context, except string) (int64, error) {
	var n int64
	err := d.db.QueryRowContext(ctx, `SELECT COALESCE(SUM(units), 0) FROM containers
		WHERE state IN ('running', 'starting', 'paused', 'stopped', 'exited') AND id != ?`, except).Scan(&n)
	return n, err
}

// FreeUnits is the capacity not held by any container.
func (d *Deployer) FreeUnits(ctx context.Context) (int64, error) {
	used, err := d.usedUnits(ctx, "")
	return d.cfg.CapacityUnits - used, err
}

func (d *Deployer) idsIn(ctx context.Context, state string) ([]string, error) {
	return d.ids(ctx, `state = ?`, state)
}

// ids lists the ids of containers matching where, in order.
func (d *Deployer) ids(ctx context.Context, where string, args ...any) ([]string, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT id FROM containers WHERE `+where+` ORDER BY id`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}
