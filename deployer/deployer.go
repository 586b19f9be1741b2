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

	"github.com/enclaved/enclaved/billing"
	"github.com/enclaved/enclaved/egressproxy"
	"github.com/enclaved/enclaved/internal/crashpoint"
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
	// containers to reach (tunnel.Allowed patterns); empty: nothing.
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
	// Links (optional) says where a container is reached from outside:
	// its lightning address and the URL of its HTTP port.
	Links func(Record) Links
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

	// The mutex serialises lifecycle changes.
	mu sync.Mutex

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
	Egress                                    []string // "host:port" the container may reach
	HTTPPort                                  int      // served by host name; 0: none
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
	var created int64
	err := d.db.QueryRowContext(ctx, `SELECT id, name, owner, channel, image, image_ref, pubkey, units, price_msat, balance_msat,
		state, state_reason, docker_id, env, paused_at, run_ms, charged_msat, image_volumes, created_at, running_since, egress, http_port FROM containers WHERE id = ?`, id).Scan(
		&r.ID, &r.Name, &r.Owner, &r.Channel, &r.Image, &r.ImageRef, &r.Pubkey, &r.Units, &r.PriceMsat, &r.BalanceMsat,
		&r.State, &r.Reason, &r.DockerID, &env, &paused, &r.RunMs, &r.ChargedMsat, &r.HasVolumes, &created, &since, &egress, &r.HTTPPort)
	r.CreatedAt = time.UnixMilli(created)
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
func (d *Deployer) plan(rec Record) (egressproxy.Plan, []string, error) {
	p, err := egressproxy.NewPlan(rec.Egress)
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
		WHERE state IN ('running', 'starting', 'paused', 'stopped') AND id != ?`, except).Scan(&n)
	return n, err
}

// FreeUnits is the capacity not held by any container.
func (d *Deployer) FreeUnits(ctx context.Context) (int64, error) {
	used, err := d.usedUnits(ctx, "")
	return d.cfg.CapacityUnits - used, err
}

// OnCredit reacts to a committed credit: a paid quote starts, a paused
// container with money again resumes.
func (d *Deployer) OnCredit(ctx context.Context, c billing.Credit) {
	rec, err := d.Get(ctx, c.ContainerID)
	if err != nil {
		d.log.Error("credit for unknown container", "container", c.ContainerID, "err", err)
		return
	}
	switch rec.State {
	case StatePaid, StateFailed: // a quote is paid once its total is (billing)
		if err := d.Launch(ctx, rec.ID); err != nil {
			d.log.Warn("launch failed", "container", rec.ID, "err", err)
		}
	case StatePaused:
		if err := d.Resume(ctx, rec.ID); err != nil {
			d.log.Warn("resume failed", "container", rec.ID, "err", err)
		}
	}
}

// Launch pulls, creates and starts a paid container. If the instance lacks
// capacity it stays paid (its balance kept) and the owner is told. Every
// step is repeatable: a relaunch after a crash reuses what exists.
func (d *Deployer) Launch(ctx context.Context, id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	rec, err := d.Get(ctx, id)
	if err != nil {
		return err
	}
	switch rec.State {
	case StatePaid, StateStarting, StateFailed:
	default: // running already, removed, or an unpaid quote
		return nil
	}
	used, err := d.usedUnits(ctx, id)
	if err != nil {
		return err
	}
	if used+rec.Units > d.cfg.CapacityUnits {
		reason := fmt.Sprintf("no capacity: %d of %d units free, %d needed", d.cfg.CapacityUnits-used, d.cfg.CapacityUnits, rec.Units)
		if !strings.HasPrefix(rec.Reason, "no capacity") {
			d.setState(ctx, id, StatePaid, reason, nil)
			d.notify(ctx, Notice{id, rec.Owner, rec.Channel, fmt.Sprintf("%s is paid (%d sats balance) but the instance is full right now: %s. It starts when capacity frees up; the balance is kept.",
				rec.Name, rec.BalanceMsat/1000, reason)})
		}
		return nil
	}
	if err := d.setState(ctx, id, StateStarting, "", nil); err != nil {
		return err
	}
	fail := func(step string, err error) error {
		if ctx.Err() != nil {
			// Shutting down: the record stays starting and the next
			// start's Reconcile launches it again.
			return fmt.Errorf("launch %s: %s: %w", id, step, err)
		}
		d.setState(ctx, id, StateFailed, step+": "+err.Error(), nil)
		d.notify(ctx, Notice{id, rec.Owner, rec.Channel, fmt.Sprintf("%s could not be started (%s). Its balance of %d sats is kept; send `start %s` to retry.",
			rec.Name, step, rec.BalanceMsat/1000, rec.Name)})
		return fmt.Errorf("launch %s: %s: %w", id, step, err)
	}
	dockerID, step, err := d.create(ctx, rec)
	if err != nil {
		return fail(step, err)
	}
	crashpoint.Hit("after-create")
	if err := d.confine(ctx, rec); err != nil {
		return fail("egress", err)
	}
	if err := d.start(ctx, id, dockerID); err != nil {
		return fail("start", err)
	}
	now := d.now()
	if err := d.setState(ctx, id, StateRunning, "", func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE containers SET docker_id = ?, paused_at = NULL WHERE id = ?`, dockerID, id); err != nil {
			return err
		}
		return billing.StartMetering(ctx, tx, id, now)
	}); err != nil {
		return err
	}
	d.dropRestored(id)
	d.woke()
	rec, _ = d.Get(ctx, id)
	d.log.Info("container running", "container", id, "units", rec.Units)
	d.notify(ctx, Notice{id, rec.Owner, rec.Channel, runningText(rec, d.cfg.Unit, d.Links(rec))})
	return nil
}

// create pulls the record's pinned image and creates its container,
// filling its volumes from a restored backup if one waits for it. It
// returns the runtime id, or the failed step and its error.
func (d *Deployer) create(ctx context.Context, rec Record) (string, string, error) {
	if err := d.rt.Pull(ctx, rec.ImageRef, d.pullProgress(ctx, rec)); err != nil {
		return "", "pull", err
	}
	env := make([]string, 0, len(rec.Env))
	for _, kv := range rec.Env {
		env = append(env, kv[0]+"="+kv[1])
	}
	_, hosts, err := d.plan(rec)
	if err != nil {
		return "", "egress", err
	}
	u := d.cfg.Unit
	dockerID, err := d.rt.Create(ctx, Spec{
		Name: RuntimeName(rec.ID), Image: rec.ImageRef, Env: env, ExtraHosts: hosts,
		Labels:   map[string]string{LabelID: rec.ID, LabelInstance: d.cfg.Instance},
		NanoCPUs: rec.Units * u.NanoCPUs, MemoryBytes: rec.Units * u.MemoryBytes, Pids: rec.Units * u.Pids,
		DiskBytes: rec.Units * u.DiskBytes, ReadonlyRoot: !rec.HasVolumes,
	})
	if err != nil {
		return "", "create", err
	}
	if err := d.importVolumes(ctx, rec.ID, dockerID); err != nil {
		return "", "restoring its volumes", err
	}
	return dockerID, "", nil
}

// Pull progress: the renter hears about a pull that takes longer than
// slowPull, then at most every pullNoticeEvery.
const (
	slowPull        = 10 * time.Second
	pullNoticeEvery = 30 * time.Second
)

func (d *Deployer) pullProgress(ctx context.Context, rec Record) func(string) {
	start := d.now()
	var last time.Time
	return func(status string) {
		now := d.now()
		if now.Sub(start) < slowPull || (!last.IsZero() && now.Sub(last) < pullNoticeEvery) {
			return
		}
		last = now
		d.notify(ctx, Notice{rec.ID, rec.Owner, rec.Channel, fmt.Sprintf("%s: still pulling the image (%s, %s so far)",
			rec.Name, clip(status, 80), now.Sub(start).Round(time.Second))})
	}
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// RuntimeName is the runtime's name for a container record.
func RuntimeName(id string) string { return "enclaved-" + id }

func runningText(r Record, u Unit, l Links) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s is running.\nnpub: %s\n", r.Name, r.Npub())
	if l.Address != "" {
		fmt.Fprintf(&sb, "lightning address: %s (anyone can zap it to keep it running)\n", l.Address)
	}
	if l.Page != "" {
		fmt.Fprintf(&sb, "page: %s\n", l.Page)
	}
	fmt.Fprintf(&sb, `image: %s
resources: %d unit(s) = %.2f CPU, %d MiB memory, %d processes
balance: %d sats, about %s of running time
Send `+"`status %s`"+` to check on it, `+"`topup %s <sats>`"+` to add time.`,
		r.ImageRef, r.Units, float64(r.Units*u.NanoCPUs)/1e9, r.Units*u.MemoryBytes>>20, r.Units*u.Pids,
		r.BalanceMsat/1000, Human(r.Left()), r.Name, r.Name)
	return sb.String()
}

// RetainUntil is when a paused or stopped container is removed, unless it
// runs again before.
func (d *Deployer) RetainUntil(rec Record) time.Time { return rec.PausedAt.Add(d.cfg.Retention) }

// Pause stops a running container and its meter (balance exhausted).
func (d *Deployer) Pause(ctx context.Context, id, reason string) error {
	return d.halt(ctx, id, StatePaused, reason)
}

// Stop stops a running container at its owner's request; it keeps its data
// and capacity for the retention window and is not charged while stopped.
func (d *Deployer) Stop(ctx context.Context, id string) error {
	return d.halt(ctx, id, StateStopped, "stopped by owner")
}

func (d *Deployer) halt(ctx context.Context, id, state, reason string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	rec, err := d.Get(ctx, id)
	if err != nil {
		return err
	}
	if rec.State != StateRunning {
		return nil
	}
	now := d.now()
	// Record first (metering stops now), then stop the runtime: a crash in
	// between leaves a halted record whose container Reconcile stops.
	if err := d.setState(ctx, id, state, reason, func(tx *sql.Tx) error {
		if _, err := billing.StopMetering(ctx, tx, id, now); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `UPDATE containers SET paused_at = ? WHERE id = ?`, now.UnixMilli(), id)
		return err
	}); err != nil {
		return err
	}
	return d.stop(ctx, id, rec.DockerID)
}

// Resume starts a paused or stopped container again, if its balance pays
// for some running time.
func (d *Deployer) Resume(ctx context.Context, id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	rec, err := d.Get(ctx, id)
	if err != nil {
		return err
	}
	if rec.State != StatePaused && rec.State != StateStopped {
		return nil
	}
	if rec.Left() <= 0 {
		return &UserError{rec.Name + " has no balance left: top it up first"}
	}
	// A container the runtime lost (the enclave restarted from a backup)
	// is created again, with its volumes from the backup.
	if ok, err := d.present(ctx, id); err != nil {
		return err
	} else if !ok {
		dockerID, step, err := d.create(ctx, rec)
		if err != nil {
			return fmt.Errorf("%s: %w", step, err)
		}
		rec.DockerID = dockerID
	}
	if err := d.confine(ctx, rec); err != nil {
		return err
	}
	if err := d.start(ctx, id, rec.DockerID); err != nil {
		return err
	}
	now := d.now()
	if err := d.setState(ctx, id, StateRunning, "", func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE containers SET paused_at = NULL, low_notified = 0, docker_id = ? WHERE id = ?`, rec.DockerID, id); err != nil {
			return err
		}
		return billing.StartMetering(ctx, tx, id, now)
	}); err != nil {
		return err
	}
	d.dropRestored(id)
	d.woke()
	d.notify(ctx, Notice{id, rec.Owner, rec.Channel, fmt.Sprintf("%s is running again; %d sats pay for about %s.", rec.Name, rec.BalanceMsat/1000, Human(rec.Left()))})
	return nil
}

// Remove removes a container from the runtime for good. Its ledger stays.
func (d *Deployer) Remove(ctx context.Context, id, reason string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	rec, err := d.Get(ctx, id)
	if err != nil {
		return err
	}
	if rec.State == StateRemoved {
		return nil
	}
	now := d.now()
	if err := d.setState(ctx, id, StateRemoved, reason, func(tx *sql.Tx) error {
		_, err := billing.StopMetering(ctx, tx, id, now)
		return err
	}); err != nil {
		return err
	}
	d.dropRestored(id)
	d.setIdle(id, false)
	if d.cfg.Confiner != nil {
		if err := d.cfg.Confiner.Release(ctx, RuntimeName(id)); err != nil {
			d.log.Warn("egress proxy release", "container", id, "err", err)
		}
	}
	if rec.DockerID == "" {
		return nil
	}
	return d.rt.Remove(ctx, rec.DockerID)
}

// Tick meters every running container up to now: it pauses those whose
// balance ran out, tells owners once when little time is left, and removes
// paused containers whose retention window has passed. It returns when the
// next tick is due: within a minute, or sooner if a balance runs out sooner.
func (d *Deployer) Tick(ctx context.Context) (time.Time, error) {
	now := d.now()
	next := now.Add(time.Minute)
	// Unpaid quotes whose invoice expired free their name.
	if _, err := d.db.ExecContext(ctx, `UPDATE containers SET state = 'expired', state_reason = 'quote expired unpaid', updated_at = ?
		WHERE state = 'quoted' AND NOT EXISTS (SELECT 1 FROM invoices i WHERE i.container_id = containers.id AND i.expires_at > ?)`,
		now.UnixMilli(), now.Unix()); err != nil {
		return next, err
	}
	ids, err := d.idsIn(ctx, StateRunning)
	if err != nil {
		return next, err
	}
	for _, id := range ids {
		m, err := d.ledger.Charge(ctx, id, now)
		if err != nil {
			d.log.Error("metering failed", "container", id, "err", err)
			continue
		}
		rec, _ := d.Get(ctx, id)
		switch {
		case m.Exhausted:
			if err := d.Pause(ctx, id, "balance exhausted"); err != nil {
				d.log.Error("pause failed", "container", id, "err", err)
				continue
			}
			d.notify(ctx, Notice{id, rec.Owner, rec.Channel, fmt.Sprintf("%s is paused: its balance is used up. Its data is kept until %s; send `topup %s <sats>` or zap it to resume.",
				rec.Name, now.Add(d.cfg.Retention).UTC().Format(time.RFC3339), rec.Name)})
		case m.Left < d.lowBalance(rec, m.Left) && !m.LowNotified:
			d.ledger.MarkLowNotified(ctx, id)
			d.notify(ctx, Notice{id, rec.Owner, rec.Channel, fmt.Sprintf("%s has %d sats left, about %s of running time. Send `topup %s <sats>` to keep it running.",
				rec.Name, m.BalanceMsat/1000, Human(m.Left), rec.Name)})
		}
		if !m.Exhausted && now.Add(m.Left).Before(next) {
			next = now.Add(m.Left)
		}
	}
	// Paused and stopped containers hold their units and data for the
	// retention window, unpaid; then they are removed.
	halted, err := d.ids(ctx, `state IN (?, ?)`, StatePaused, StateStopped)
	if err != nil {
		return next, err
	}
	for _, id := range halted {
		rec, err := d.Get(ctx, id)
		if err != nil {
			continue
		}
		until := rec.PausedAt.Add(d.cfg.Retention)
		if !now.Before(until) {
			if err := d.Remove(ctx, id, "retention window passed"); err != nil {
				d.log.Error("remove failed", "container", id, "err", err)
				continue
			}
			d.notify(ctx, Notice{id, rec.Owner, rec.Channel, fmt.Sprintf("%s was removed: it stayed %s past the retention window (%s).",
				rec.Name, rec.State, Human(d.cfg.Retention))})
		} else if until.Before(next) {
			next = until
		}
	}
	// Paid containers that waited for capacity start when some is free.
	waiting, err := d.idsIn(ctx, StatePaid)
	if err != nil {
		return next, err
	}
	for _, id := range waiting {
		if err := d.Launch(ctx, id); err != nil {
			d.log.Warn("launch failed", "container", id, "err", err)
		}
	}
	return next, nil
}

// lowBalance is when an owner is told that time runs short: the operator's
// setting, or a quarter of all the running time the container was paid
// for, whichever is less (a renter who paid for one hour is not warned at
// once, but at 15 minutes left).
func (d *Deployer) lowBalance(rec Record, left time.Duration) time.Duration {
	paid := time.Duration(rec.RunMs)*time.Millisecond + left
	return min(d.cfg.LowBalance, paid/4)
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

// Reconcile brings the runtime in line with the records, at start: runtime
// containers of this instance without a live record are stopped and
// reported; records that should run are (re)started from their pinned
// digest, or marked failed; halted records' containers are stopped; a
// paused container credited while the instance was down resumes.
func (d *Deployer) Reconcile(ctx context.Context) error {
	list, err := d.rt.List(ctx)
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	present := map[string]Info{}
	for _, c := range list {
		if c.Labels[LabelInstance] != d.cfg.Instance {
			continue
		}
		id := c.Labels[LabelID]
		rec, err := d.Get(ctx, id)
		if errors.Is(err, ErrNotFound) || (err == nil && rec.State == StateRemoved) {
			d.log.Warn("stopping a container with no live record", "runtime_id", c.ID, "record", id)
			if c.Running {
				d.rt.Stop(ctx, c.ID)
			}
			continue
		}
		present[id] = c
	}
	for _, state := range []string{StateRunning, StateStarting, StatePaid, StatePaused, StateStopped} {
		ids, err := d.idsIn(ctx, state)
		if err != nil {
			return err
		}
		for _, id := range ids {
			c, exists := present[id]
			switch state {
			case StateRunning:
				if !exists {
					d.log.Warn("running container missing from the runtime; recreating", "container", id)
					d.setState(ctx, id, StatePaid, "recreating", func(tx *sql.Tx) error {
						_, err := billing.StopMetering(ctx, tx, id, d.now())
						return err
					})
					err = d.Launch(ctx, id)
				} else if rec, gerr := d.Get(ctx, id); gerr != nil {
					err = gerr
				} else if err = d.confine(ctx, rec); err == nil && !c.Running {
					err = d.start(ctx, id, c.ID)
				}
			case StateStarting, StatePaid:
				err = d.Launch(ctx, id)
			case StatePaused, StateStopped:
				if !exists {
					err = d.recreate(ctx, id)
				} else if c.Running {
					err = d.stop(ctx, id, c.ID)
				} else {
					d.setIdle(id, true)
				}
				if rec, gerr := d.Get(ctx, id); gerr == nil && state == StatePaused && rec.Left() > 0 {
					err = d.Resume(ctx, id)
				}
			}
			if err != nil {
				d.log.Warn("reconcile", "container", id, "state", state, "err", err)
			}
		}
	}
	d.dropStaleRestores(ctx)
	return nil
}

// present says whether the runtime has container id.
func (d *Deployer) present(ctx context.Context, id string) (bool, error) {
	list, err := d.rt.List(ctx)
	if err != nil {
		return false, err
	}
	for _, c := range list {
		if c.Labels[LabelID] == id && c.Labels[LabelInstance] == d.cfg.Instance {
			return true, nil
		}
	}
	return false, nil
}

// recreate creates a halted container the runtime lost (an enclave
// restarted from a backup) without starting it, so that its volumes,
// filled from the backup, are kept in the runtime from now on.
func (d *Deployer) recreate(ctx context.Context, id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	rec, err := d.Get(ctx, id)
	if err != nil || (rec.State != StatePaused && rec.State != StateStopped) || rec.DockerID == "" {
		return err
	}
	dockerID, step, err := d.create(ctx, rec)
	if err != nil {
		return fmt.Errorf("recreate %s: %s: %w", id, step, err)
	}
	if _, err := d.db.ExecContext(ctx, `UPDATE containers SET docker_id = ? WHERE id = ?`, dockerID, id); err != nil {
		return err
	}
	// Its volumes hold the restored copy, which the backups name already.
	d.idleSince(id, time.Time{})
	d.dropRestored(id)
	d.log.Info("halted container created again", "container", id, "state", rec.State)
	return nil
}
