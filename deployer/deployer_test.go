package deployer_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enclaved/enclaved/billing"
	"github.com/enclaved/enclaved/bot"
	"github.com/enclaved/enclaved/deployer"
	"github.com/enclaved/enclaved/deployer/docker"
	"github.com/enclaved/enclaved/internal/testenv"
	"github.com/enclaved/enclaved/records"
	"github.com/enclaved/enclaved/store"
)

// inbox is what owners read: the deployer's events in the bot's words.
type inbox struct {
	mu      sync.Mutex
	unit    records.Unit
	notices []string
}

func (b *inbox) notify(_ context.Context, ev deployer.Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.notices = append(b.notices, bot.EventText(ev, b.unit, deployer.Links{}))
}

func (b *inbox) count(substr string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, x := range b.notices {
		if strings.Contains(x, substr) {
			n++
		}
	}
	return n
}

type fixture struct {
	db     *store.DB
	d      *deployer.Deployer
	cfg    deployer.Config
	ledger *billing.Ledger
	clock  *testenv.Clock
	inbox  *inbox
	rt     *docker.Runtime
}

// t0 is the fixtures' clock at their start.
var t0 = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

func newFixture(t *testing.T, instance string, opts ...func(*deployer.Config)) *fixture {
	t.Helper()
	return newFixtureAt(t, instance, t0, opts...)
}

// newFixtureAt is newFixture with its clock at start.
func newFixtureAt(t *testing.T, instance string, start time.Time, opts ...func(*deployer.Config)) *fixture {
	t.Helper()
	testenv.Docker(t)
	ctx := context.Background()
	db, err := store.Open(ctx, filepath.Join(t.TempDir(), "enclaved.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	rt, err := docker.New(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	f := &fixture{db: db, ledger: billing.NewLedger(db), clock: testenv.NewClock(start), inbox: &inbox{}, rt: rt}
	cfg := deployer.Config{
		Instance:      instance,
		Unit:          records.Unit{NanoCPUs: 250_000_000, MemoryBytes: 64 << 20, Pids: 64, DiskBytes: 128 << 20},
		CapacityUnits: 4, LowBalance: time.Hour, Retention: 72 * time.Hour,
	}
	for _, o := range opts {
		o(&cfg)
	}
	f.cfg = cfg
	f.inbox.unit = cfg.Unit
	f.d = newDeployer(f)
	return f
}

// newDeployer is the fixture's deployer, its events in the inbox.
func newDeployer(f *fixture) *deployer.Deployer {
	d := deployer.New(f.db, f.rt, f.cfg, f.clock.Now, slog.New(slog.NewTextHandler(io.Discard, nil)))
	d.OnEvent = append(d.OnEvent, f.inbox.notify)
	return d
}

// restart is the instance starting again on the same database and engine:
// a new deployer, reconciled.
func (f *fixture) restart(t *testing.T) {
	t.Helper()
	f.d = newDeployer(f)
	if err := f.d.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// quoted records a quoted container, as `deploy` leaves it; env
// (optional) is its environment.
func (f *fixture) quoted(t *testing.T, id string, img testenv.Image, volumes bool, units, price int64, env ...[2]string) {
	t.Helper()
	ok, err := f.d.Records.InsertQuote(context.Background(), records.NewQuote{ID: id, Name: "c-" + id, Owner: "owner", Channel: "nip17",
		Image: img.Tag, ImageRef: img.Ref, ImageSize: img.Size, HasVolumes: volumes, Units: units, PriceMsat: price, Env: env}, records.QuoteCaps{})
	if err != nil || !ok {
		t.Fatalf("quote %s: %v (recorded: %v)", id, err, ok)
	}
	t.Cleanup(func() { f.rt.Remove(context.Background(), deployer.RuntimeName(id)) })
}

// pay records a paid top-up of msat for container id, as the settlement
// stream applies it, and lets the deployer react.
func (f *fixture) pay(t *testing.T, id, hash string, msat int64) {
	t.Helper()
	f.d.OnCredit(context.Background(), f.credit(t, id, hash, msat))
}

// credit records a paid top-up of msat for container id, as the
// settlement stream applies it, without the deployer hearing of it.
func (f *fixture) credit(t *testing.T, id, hash string, msat int64) billing.Credit {
	t.Helper()
	ctx := context.Background()
	invoices := &billing.Invoices{DB: f.db, Now: f.clock.Now}
	if err := invoices.Record(ctx, billing.Request{ContainerID: id, Purpose: "topup", AmountMsat: msat},
		billing.Invoice{PaymentHash: hash, Bolt11: "lnbc", ExpiresAt: time.Unix(0, 0)}); err != nil {
		t.Fatal(err)
	}
	c, err := f.ledger.ApplySettlement(ctx, billing.Settlement{PaymentHash: hash, AmountMsat: msat, SettledAt: f.clock.Now()})
	if err != nil || !c.Applied {
		t.Fatalf("credit: %+v %v", c, err)
	}
	return c
}

// owner carries out an owner's command (stop, start, delete) on id, sent now.
func (f *fixture) owner(t *testing.T, id, verb string) error {
	t.Helper()
	_, _, err := f.d.OwnerCommand(context.Background(), id, verb, f.clock.Now())
	return err
}

func (f *fixture) state(t *testing.T, id string) records.Record {
	t.Helper()
	r, err := f.d.Records.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (f *fixture) running(t *testing.T, id string) bool {
	t.Helper()
	list, err := f.rt.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range list {
		if c.Labels[deployer.LabelID] == id {
			return c.Running
		}
	}
	return false
}

func TestLifecycleWithMetering(t *testing.T) {
	imgs := testenv.Images(t)
	f := newFixture(t, "inst-lifecycle")
	ctx := context.Background()
	const price = 3_600_000 // msat per unit-hour: 1 sat per second for one unit
	f.quoted(t, "life", imgs.Hello, true, 1, price)

	f.pay(t, "life", "pay-deploy", 2*price) // two hours
	if r := f.state(t, "life"); r.State != records.StateRunning || !f.running(t, "life") {
		t.Fatalf("after payment: state %s (%s), running %v", r.State, r.Reason, f.running(t, "life"))
	}
	if f.inbox.count("is running") != 1 {
		t.Errorf("owner not told it runs: %+v", f.inbox.notices)
	}
	// It serves, and has counted its first start in its volume, before the
	// clock runs its balance out: a stop in the first milliseconds of the
	// process would come before that write.
	testenv.WaitHTTP(t, testenv.Docker(t), f.state(t, "life").DockerID, 8080, "(start 1)")

	f.clock.Add(61 * time.Minute)
	next, err := f.d.Tick(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r := f.state(t, "life"); r.BalanceMsat != 2*price-61*60_000 || r.Left() != 59*time.Minute {
		t.Errorf("after 61 min: balance %d, left %s", r.BalanceMsat, r.Left())
	}
	if want := f.clock.Now().Add(time.Minute); !next.Equal(want) {
		t.Errorf("next tick %s, want %s", next, want)
	}
	// The owner is warned at a quarter of the paid time (30 min) left,
	// as that is less than the 1 h setting, and once only.
	if n := f.inbox.count("sats left"); n != 0 {
		t.Errorf("warned with 59 min of 120 left")
	}
	f.clock.Add(30 * time.Minute)
	f.d.Tick(ctx)
	f.clock.Add(time.Second)
	f.d.Tick(ctx)
	if n := f.inbox.count("sats left"); n != 1 {
		t.Errorf("%d low-balance notices, want exactly 1", n)
	}

	f.clock.Add(2 * time.Hour)
	f.d.Tick(ctx)
	if r := f.state(t, "life"); r.State != records.StatePaused || r.BalanceMsat != 0 || f.running(t, "life") {
		t.Fatalf("after the balance ran out: %s balance %d running %v", r.State, r.BalanceMsat, f.running(t, "life"))
	}
	if f.inbox.count("is paused") != 1 {
		t.Errorf("owner not told of the pause")
	}

	f.pay(t, "life", "pay-topup", price/2) // 30 min
	if r := f.state(t, "life"); r.State != records.StateRunning || !f.running(t, "life") {
		t.Fatalf("after top-up: %s running %v", r.State, f.running(t, "life"))
	}
	testenv.WaitHTTP(t, testenv.Docker(t), f.state(t, "life").DockerID, 8080, "(start 2)") // its volume survived the pause
	f.clock.Add(30 * time.Minute)
	f.d.Tick(ctx)
	if r := f.state(t, "life"); r.State != records.StatePaused {
		t.Fatalf("after the top-up ran out: %s", r.State)
	}

	f.clock.Add(72*time.Hour - time.Second)
	f.d.Tick(ctx)
	if r := f.state(t, "life"); r.State != records.StatePaused {
		t.Fatalf("removed before the retention window passed: %s", r.State)
	}
	f.clock.Add(time.Second)
	f.d.Tick(ctx)
	if r := f.state(t, "life"); r.State != records.StateRemoved {
		t.Fatalf("after retention: %s", r.State)
	}
	if list, _ := f.rt.List(ctx); len(list) > 0 {
		for _, c := range list {
			if c.Labels[deployer.LabelID] == "life" {
				t.Error("runtime container still there after removal")
			}
		}
	}
	credits, debits, _ := f.ledger.Sums(ctx, "life")
	if credits != 2*price+price/2 || debits != credits {
		t.Errorf("ledger: credits %d debits %d, want both %d", credits, debits, 2*price+price/2)
	}
}

// A crash after the container started but before it was recorded running:
// Reconcile adopts it (one container, not two). A labelled container with no
// record is stopped.
func TestReconcileAfterCrash(t *testing.T) {
	imgs := testenv.Images(t)
	f := newFixture(t, "inst-reconcile")
	ctx := context.Background()
	f.quoted(t, "crash", imgs.Hello, true, 1, 1000)
	f.credit(t, "crash", "pay-crash", 100_000)
	if err := f.d.Records.Transition(ctx, "crash", records.StateStarting, "", nil); err != nil {
		t.Fatal(err)
	}
	if err := f.rt.Pull(ctx, imgs.Hello.Ref, nil); err != nil {
		t.Fatal(err)
	}
	spec := deployer.Spec{Name: deployer.RuntimeName("crash"), Image: imgs.Hello.Ref,
		Labels: map[string]string{deployer.LabelID: "crash", deployer.LabelInstance: "inst-reconcile"}, Pids: 32, MemoryBytes: 64 << 20}
	id, err := f.rt.Create(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	f.rt.Start(ctx, id)
	strayID, err := f.rt.Create(ctx, deployer.Spec{Name: "enclaved-stray-test", Image: imgs.Hello.Ref,
		Labels: map[string]string{deployer.LabelID: "stray", deployer.LabelInstance: "inst-reconcile"}, Pids: 32, MemoryBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.rt.Remove(context.Background(), strayID) })
	f.rt.Start(ctx, strayID)

	if err := f.d.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if r := f.state(t, "crash"); r.State != records.StateRunning || r.DockerID != id {
		t.Errorf("record %s docker %s, want running on the existing %s", r.State, r.DockerID, id)
	}
	list, _ := f.rt.List(ctx)
	n := 0
	for _, c := range list {
		if c.Labels[deployer.LabelID] == "crash" {
			n++
		}
		if c.ID == strayID && c.Running {
			t.Error("container without a record still running")
		}
	}
	if n != 1 {
		t.Errorf("%d runtime containers for one record", n)
	}
}
