package deployer_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/enclaved/enclaved/deployer"
	"github.com/enclaved/enclaved/internal/testenv"
	"github.com/enclaved/enclaved/records"
)

// within runs op and fails the test if it has not returned within a bound
// generous for the engine (a bound on a hang, not a measure of speed).
func within(t *testing.T, what string, op func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- op() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(time.Minute):
		t.Fatalf("%s waited for another container's image pull", what)
	}
}

// No lock is held across an image pull: while one renter's pull hangs on
// a slow registry, another owner's container is stopped, started, metered
// to zero, paused and deleted at once; then the slow one starts.
func TestSlowPullHoldsUpNothingElse(t *testing.T) {
	imgs := testenv.Images(t)
	gate := testenv.NewGatedRegistry(t)
	slow := gate.PushUnique(t, "slow")
	f := newFixture(t, "inst-slowpull")
	ctx := context.Background()
	const price = 3_600_000 // 1 sat per second
	f.quoted(t, "a", imgs.Hello, true, 1, price)
	f.pay(t, "a", "pay-a", 60_000)
	if r := f.state(t, "a"); r.State != records.StateRunning {
		t.Fatalf("a: %s (%s)", r.State, r.Reason)
	}

	f.quoted(t, "b", slow, false, 1, price)
	gate.Hold()
	launched := make(chan struct{})
	go func() { defer close(launched); f.pay(t, "b", "pay-b", 60_000) }()
	select {
	case <-gate.Waiting():
	case <-launched:
		t.Fatalf("b started without reaching the registry: %+v", f.state(t, "b"))
	}

	within(t, "stop a", func() error { return f.owner(t, "a", deployer.CommandStop) })
	within(t, "start a", func() error { return f.owner(t, "a", deployer.CommandStart) })
	f.clock.Add(61 * time.Second) // a's 60 sats run out
	within(t, "metering", func() error { _, err := f.d.Tick(ctx); return err })
	if r := f.state(t, "a"); r.State != records.StatePaused || r.BalanceMsat != 0 {
		t.Fatalf("a after its balance ran out: %s, %d msat", r.State, r.BalanceMsat)
	}
	within(t, "delete a", func() error { return f.owner(t, "a", deployer.CommandDelete) })
	if r := f.state(t, "b"); r.State != records.StateStarting {
		t.Fatalf("b is %s while its pull is held", r.State)
	}

	gate.Release()
	<-launched
	if r := f.state(t, "b"); r.State != records.StateRunning || !f.running(t, "b") {
		t.Fatalf("b after its pull: %s (%s)", r.State, r.Reason)
	}
}

// A pull has a deadline: one that does not finish in time fails the launch,
// keeps the paid balance and tells the owner, and `start` retries it.
func TestPullDeadlineKeepsTheBalance(t *testing.T) {
	gate := testenv.NewGatedRegistry(t)
	slow := gate.PushUnique(t, "late")
	f := newFixture(t, "inst-pulldeadline", func(c *deployer.Config) { c.PullTimeout = 2 * time.Second })
	f.quoted(t, "late", slow, false, 1, 1000)
	gate.Hold()
	f.pay(t, "late", "pay-late", 5_000)
	r := f.state(t, "late")
	if r.State != records.StateFailed || r.BalanceMsat != 5_000 || !strings.Contains(r.Reason, "did not arrive within 2 s") {
		t.Fatalf("after the deadline: %s (%s), %d msat", r.State, r.Reason, r.BalanceMsat)
	}
	if f.inbox.count("c-late could not be started (pull). Its balance of 5 sats is kept; send `start c-late` to retry") != 1 {
		t.Errorf("owner not told: %+v", f.inbox.notices)
	}
	gate.Release()
	if err := f.owner(t, "late", deployer.CommandStart); err != nil {
		t.Fatal(err)
	}
	if r := f.state(t, "late"); r.State != records.StateRunning || r.BalanceMsat != 5_000 {
		t.Fatalf("after start: %s (%s), %d msat", r.State, r.Reason, r.BalanceMsat)
	}
}
