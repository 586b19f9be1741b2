package enclave_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/enclaved/enclaved/billing"
	"github.com/enclaved/enclaved/internal/proc"
	"github.com/enclaved/enclaved/internal/testenv"
	"github.com/enclaved/enclaved/records"
)

// The money model, tried at random on the real stack: renters quote, pay
// (or not), top up, zap, stop, start and delete; containers exit on their
// own; the clock jumps; the instance is stopped or cut off in the middle of
// whatever runs and started again. After every step the database audits
// clean (credits − debits = balances exactly, every settled payment
// credited once, no unpaid or over-held units, nothing running at zero past
// an interval), every payment made is credited exactly once, and every
// container the records say runs, runs. ENCLAVED_MODEL_STEPS sets the
// number of steps (60 by default, for CI); ENCLAVED_MODEL_SEED replays one.
func TestMoneyModel(t *testing.T) {
	steps := 60
	if v, err := strconv.Atoi(os.Getenv("ENCLAVED_MODEL_STEPS")); err == nil {
		steps = v
	}
	seed := uint64(time.Now().UnixNano())
	if v, err := strconv.ParseUint(os.Getenv("ENCLAVED_MODEL_SEED"), 10, 64); err == nil {
		seed = v
	}
	t.Logf("seed %d, %d steps (ENCLAVED_MODEL_SEED, ENCLAVED_MODEL_STEPS)", seed, steps)
	rng := rand.New(rand.NewPCG(seed, 0))

	relay := testenv.Relay(t)
	imgs := testenv.Images(t)
	ln := testenv.Lightning(t)
	dc := testenv.Docker(t)
	ctx := context.Background()
	dir, clk := t.TempDir(), &clock{}
	sets := []string{"nostr.commands_per_minute=100000", "instance.capacity_units=4", "pricing.msat_per_unit_hour=3600000", "pricing.retention=1h", "pricing.quote_expiry=1m",
		"http.invoices_per_client_per_minute=100000", "http.invoices_per_minute=100000"}
	inst := startInstanceAt(t, dir, []string{relay.URL}, clk, nil, sets...)
	self := inst.key.PublicKey()
	renters := []*testenv.Client{testenv.NewClient(t, relay.URL), testenv.NewClient(t, relay.URL), testenv.NewClient(t, relay.URL)}
	owners := map[string]*testenv.Client{} // container name → its owner
	var names []string
	paid := map[string]string{} // payment hash → what it paid
	tried := map[string]int{}
	var jumped time.Duration // how far the clock was moved on

	payInvoice := func(bolt11, what string) {
		res, err := ln.Payer.Pay(ctx, bolt11)
		if err == nil {
			paid[res.PaymentHash] = what
		}
	}
	ask := func(c *testenv.Client, text string) string {
		return c.Ask(t, "nip17", self, text).Text
	}
	pick := func() (string, *testenv.Client) {
		n := names[rng.IntN(len(names))]
		return n, owners[n]
	}
	// find is a container's record, if it still has one: a quote left
	// unpaid is forgotten an hour after it expired.
	find := func(name string) (records.Record, bool) {
		rec, err := inst.in.Deployer.Records.Find(ctx, name)
		if errors.Is(err, records.ErrNotFound) {
			return rec, false
		}
		if err != nil {
			t.Fatal(err)
		}
		return rec, true
	}

	for step := 1; step <= steps; step++ {
		actions := []string{"deploy", "deploy", "clock", "restart"}
		if len(names) > 0 {
			actions = append(actions, "topup", "zap", "stop", "start", "delete", "exit", "clock", "unpaid", "restart")
		}
		act := actions[rng.IntN(len(actions))]
		tried[act]++
		what := act
		switch act {
		case "deploy", "unpaid":
			c := renters[rng.IntN(len(renters))]
			name := fmt.Sprintf("m%02d", step)
			img := imgs.Hello.Ref
			if rng.IntN(3) == 0 {
				img = imgs.ExitAfter.Ref + " env=EXIT_AFTER=" + strconv.Itoa(1+rng.IntN(20))
			}
			r := ask(c, fmt.Sprintf("deploy %s name=%s hours=1 units=%d", img, name, 1+rng.IntN(2)))
			if strings.Contains(r, "Quote") {
				owners[name] = c
				names = append(names, name)
				if act == "deploy" {
					payInvoice(testenv.Invoice(t, r), "deploy "+name)
				}
			}
			what += " " + name
		case "topup":
			name, _ := pick()
			c := renters[rng.IntN(len(renters))]
			if r := ask(c, fmt.Sprintf("topup %s %d", name, 1+rng.IntN(600))); strings.Contains(r, "lnbcrt") {
				payInvoice(testenv.Invoice(t, r), "topup "+name)
			}
			what += " " + name
		case "zap":
			name, _ := pick()
			var pr struct{ Callback string }
			if rec, ok := find(name); ok && getJSON(t, "http://"+inst.http+"/.well-known/lnurlp/"+name, &pr) == 200 {
				if inv, err := testenv.TryZapInvoice(pr.Callback, rec.Pubkey, relay.URL, int64(1000*(1+rng.IntN(300)))); err == nil {
					payInvoice(inv, "zap "+name)
				}
			}
			what += " " + name
		case "stop", "start", "delete":
			name, c := pick()
			ask(c, act+" "+name)
			what += " " + name
		case "exit":
			name, _ := pick()
			// Killed from outside the instance: it stopped on its own.
			if rec, ok := find(name); ok && rec.State == records.StateRunning {
				dc.ContainerKill(ctx, rec.DockerID, "KILL")
			}
			what += " " + name
		case "clock":
			d := time.Duration(rng.IntN(40)) * time.Minute
			// The instance's clock stays within a day of the relay's:
			// gift wraps are dated up to 10 h in the real past, and the
			// bot asks relays for the last 49 h by its own clock.
			if jumped+d > 24*time.Hour {
				d = 0
			}
			jumped += d
			clk.Add(d)
			if _, err := inst.in.Deployer.Tick(ctx); err != nil {
				t.Fatalf("step %d: tick: %v", step, err)
			}
			what += " +" + d.String()
		case "restart":
			// Cut off in the middle of whatever runs: a payment on its way
			// in, a launch, a notice.
			if len(names) > 0 && rng.IntN(2) == 0 {
				name, _ := pick()
				var pr struct{ Callback string }
				if rec, ok := find(name); ok && getJSON(t, "http://"+inst.http+"/.well-known/lnurlp/"+name, &pr) == 200 {
					if inv, err := testenv.TryZapInvoice(pr.Callback, rec.Pubkey, relay.URL, 5000); err == nil {
						payInvoice(inv, "zap "+name+" at a restart")
					}
				}
			}
			inst.stop()
			inst = startInstanceAt(t, dir, []string{relay.URL}, clk, nil, sets...)
		}
		checkModel(t, step, what, inst, paid, dc)
	}
	t.Logf("actions %v; %d payments, %d containers", tried, len(paid), len(names))
}

// checkModel waits (a bound, not a timing) until every payment made is
// credited once (or recorded unclaimed) and the engine runs what the
// records say runs, then audits the database.
func checkModel(t *testing.T, step int, what string, inst *instance, paid map[string]string, dc interface {
	ContainerInspect(context.Context, string) (container.InspectResponse, error)
}) {
	t.Helper()
	ctx := context.Background()
	var last string
	err := proc.WaitFor(ctx, "the model settled", 2*time.Minute, func(context.Context) (bool, error) {
		for hash, p := range paid {
			var credits, unclaimed int
			inst.db.QueryRow(`SELECT COUNT(*) FROM ledger WHERE payment_hash = ?`, hash).Scan(&credits)
			inst.db.QueryRow(`SELECT COUNT(*) FROM unclaimed WHERE payment_hash = ?`, hash).Scan(&unclaimed)
			if credits+unclaimed != 1 {
				last = fmt.Sprintf("%s (%s…): %d credits, %d unclaimed", p, hash[:12], credits, unclaimed)
				return false, nil
			}
		}
		recs, err := inst.in.Deployer.Records.Live(ctx)
		if err != nil {
			return false, err
		}
		for _, r := range recs {
			if r.State == records.StateStarting || r.State == records.StatePaid && strings.HasPrefix(r.Reason, "recreating") {
				last = r.Name + " is " + r.State
				return false, nil
			}
			if r.State != records.StateRunning || r.DockerID == "" {
				continue
			}
			info, err := dc.ContainerInspect(ctx, r.DockerID)
			if err != nil || !info.State.Running {
				// It may just have exited: the watcher will say so.
				last = fmt.Sprintf("%s is running in the records, not in the engine (%v)", r.Name, err)
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("step %d (%s): %v: %s", step, what, err, last)
	}
	rep, err := billing.Audit(ctx, inst.db.DB, billing.AuditLimits{Now: inst.clock.Now(), Interval: time.Minute,
		Retention: time.Hour, Capacity: 4})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range rep.Checks {
		if !c.OK() {
			t.Fatalf("step %d (%s): audit: %s: %v", step, what, c.Name, c.Failures)
		}
	}
}
