package bench

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/billing"
	"github.com/enclaved/enclaved/deployer"
	"github.com/enclaved/enclaved/deployer/docker"
	"github.com/enclaved/enclaved/internal/testenv"
	"github.com/enclaved/enclaved/records"
	"github.com/enclaved/enclaved/store"
)

// The instance's unit (config defaults), which the floors use too.
var unit = records.Unit{NanoCPUs: 250_000_000, MemoryBytes: 128 << 20, Pids: 128, DiskBytes: 512 << 20}

// dockerRuntime is the deployer's Docker runtime, closed when the test ends.
func dockerRuntime(t testing.TB) *docker.Runtime {
	t.Helper()
	testenv.Docker(t)
	rt, err := docker.New(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt
}

// bareCreateStart is P3's floor: the median of n docker create + start of
// img (present) with a unit's limits and its own network, through the
// deployer's runtime, as the instance does without anything around it.
func bareCreateStart(t testing.TB, rt *docker.Runtime, img testenv.Image, n int) time.Duration {
	t.Helper()
	ctx := context.Background()
	if err := rt.Pull(ctx, img.Ref, nil); err != nil {
		t.Fatal(err)
	}
	run := randomHex(4)
	var ds []time.Duration
	for i := range n {
		s := deployer.Spec{Name: fmt.Sprintf("enclaved-bench-bare-%s-%d", run, i), Image: img.Ref,
			Labels:   map[string]string{deployer.LabelID: "bench-bare", deployer.LabelInstance: "bench-" + run},
			NanoCPUs: unit.NanoCPUs, MemoryBytes: unit.MemoryBytes, Pids: unit.Pids, DiskBytes: unit.DiskBytes}
		start := time.Now()
		id, err := rt.Create(ctx, s)
		if err == nil {
			err = rt.Start(ctx, id)
		}
		ds = append(ds, time.Since(start))
		rt.Remove(ctx, s.Name)
		if err != nil {
			t.Fatal(err)
		}
	}
	return median(ds)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// seed records n running containers in db through the owners' APIs, as a
// paid deploy and a launch leave them (without a runtime container: a
// metering pass does not look at the runtime), each with a balance that
// lasts, started evenly over the hour before now (a steady state: metering
// charges each about hourly). Owners have ten containers each.
func seed(t testing.TB, db *store.DB, n int, now func() time.Time) {
	t.Helper()
	ctx := context.Background()
	recs := records.New(db, now)
	invoices := &billing.Invoices{DB: db, Now: now}
	ledger := billing.NewLedger(db)
	const price = 10_000 // msat per unit-hour
	var owner string
	for i := range n {
		if i%10 == 0 {
			owner, _ = nostr.GetPublicKey(nostr.GeneratePrivateKey())
		}
		id := randomHex(8)
		pub, _ := nostr.GetPublicKey(nostr.GeneratePrivateKey())
		ok, err := recs.InsertQuote(ctx, records.NewQuote{ID: id, Name: "seed-" + id, Owner: owner, Channel: "nip17",
			Image: "bench/seed", ImageRef: "bench/seed@sha256:" + strings.Repeat("0", 64), ImageSize: 1, Units: 1, PriceMsat: price, Pubkey: pub},
			records.QuoteCaps{})
		if err != nil || !ok {
			t.Fatalf("seed quote: %v (recorded %v)", err, ok)
		}
		// The deploy invoice stays open (a running instance would launch
		// a paid record); the container is marked running, then credited
		// by a top-up.
		if err := invoices.Record(ctx, billing.Request{ContainerID: id, Purpose: "deploy", AmountMsat: price},
			billing.Invoice{PaymentHash: randomHex(32), Bolt11: "lnbcrt-seed", ExpiresAt: now().Add(24 * time.Hour)}); err != nil {
			t.Fatal(err)
		}
		at := now().Add(-time.Hour * time.Duration(i) / time.Duration(n))
		if err := recs.Transition(ctx, id, records.StateRunning, "", func(tx *sql.Tx) error {
			if err := records.MarkRunning(ctx, tx, id, "bench-seed-"+id); err != nil {
				return err
			}
			return billing.StartMetering(ctx, tx, id, at)
		}); err != nil {
			t.Fatal(err)
		}
		hash := randomHex(32)
		if err := invoices.Record(ctx, billing.Request{ContainerID: id, Purpose: "topup", AmountMsat: 1000 * price},
			billing.Invoice{PaymentHash: hash, Bolt11: "lnbcrt-seed", ExpiresAt: now().Add(24 * time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if _, err := ledger.ApplySettlement(ctx, billing.Settlement{PaymentHash: hash, AmountMsat: 1000 * price, SettledAt: at}); err != nil {
			t.Fatal(err)
		}
	}
}

// clock is a settable clock for the metering pass.
type clock struct {
	mu sync.Mutex
	at time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.at }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.at = c.at.Add(d)
}

// cpuTime is this process's user + system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// p5 measures one metering pass (deployer.Tick) over s.P5Containers running
// containers in a database of their own on a RAM disk: the CPU time of this
// process during the pass (nothing else runs in it meanwhile but the idle
// relay), median of s.P5Passes passes a minute apart.
func p5(t testing.TB, rt *docker.Runtime, s sizes, d *details) row {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, filepath.Join(ramDir(t, "p5"), "enclaved.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	clk := &clock{at: time.Now()}
	start := time.Now()
	seed(t, db, s.P5Containers, clk.Now)
	d.line("P5: seeded %d running containers in %v", s.P5Containers, time.Since(start).Round(time.Millisecond))
	dep := deployer.New(db, rt, deployer.Config{Instance: "bench-p5", Unit: unit, CapacityUnits: 1 << 40,
		LowBalance: time.Hour, Retention: 72 * time.Hour}, clk.Now, slog.New(slog.NewTextHandler(io.Discard, nil)))
	var cpus, walls []time.Duration
	for i := range s.P5Passes + 1 {
		clk.Add(time.Minute)
		c0, w0 := cpuTime(), time.Now()
		if _, err := dep.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		if i > 0 { // the first pass warms the caches
			cpus, walls = append(cpus, cpuTime()-c0), append(walls, time.Since(w0))
		}
	}
	// Every container due was charged: none went uncharged for over an
	// hour (the steady state metering keeps).
	var charged, late int
	db.QueryRowContext(ctx, `SELECT COUNT(*) FROM ledger WHERE kind = 'debit'`).Scan(&charged)
	db.QueryRowContext(ctx, `SELECT COUNT(*) FROM containers WHERE running_since < ?`, clk.Now().Add(-time.Hour).UnixMilli()).Scan(&late)
	if charged == 0 || late > 0 {
		t.Fatalf("the metering passes charged %d times; %d containers uncharged for over an hour", charged, late)
	}
	got := median(cpus)
	d.line("P5: metering pass over %d: CPU %v, wall %v (medians of %d: CPU %v); %d charges in %d passes",
		s.P5Containers, got, median(walls), len(cpus), cpus, charged, s.P5Passes+1)
	// The worst case: an hour with no pass (every container due at once);
	// a pass takes at most its cap of periodic charges.
	clk.Add(time.Hour)
	c0, w0 := cpuTime(), time.Now()
	if _, err := dep.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	d.line("P5: a pass with all %d due (capped): CPU %v, wall %v", s.P5Containers, cpuTime()-c0, time.Since(w0))
	return row{ID: "P5", Measure: fmt.Sprintf("one metering pass over %d running containers, CPU time", s.P5Containers),
		Goal: "≤ 20 ms", Unit: "ms", Measured: ms(got), Checked: true, Pass: got <= goalP5CPU}
}

// removeContainers removes what the instance whose pubkey is instance left
// in Docker (containers and their networks, four at a time) and returns
// how many containers it removed.
func removeContainers(t testing.TB, instance string) int {
	ctx := context.Background()
	rt, err := docker.New(ctx)
	if err != nil {
		t.Error(err)
		return 0
	}
	defer rt.Close()
	list, err := rt.List(ctx)
	if err != nil {
		t.Error(err)
	}
	ids := make(chan string)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for id := range ids {
				if err := rt.Remove(ctx, id); err != nil {
					t.Errorf("removing container %s: %v", id, err)
				}
			}
		})
	}
	n := 0
	for _, c := range list {
		if c.Labels[deployer.LabelInstance] == instance {
			ids <- c.ID
			n++
		}
	}
	close(ids)
	wg.Wait()
	// Networks whose container never was, or went first.
	nets, err := rt.Networks(ctx)
	if err != nil {
		t.Error(err)
	}
	for _, nw := range nets {
		if nw.Labels[deployer.LabelInstance] == instance {
			if err := rt.RemoveNetwork(ctx, nw.Name); err != nil {
				t.Errorf("removing network %s: %v", nw.Name, err)
			}
		}
	}
	return n
}
