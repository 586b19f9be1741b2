package deployer_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/enclaved/enclaved/deployer"
	"github.com/enclaved/enclaved/internal/proc"
	"github.com/enclaved/enclaved/internal/testenv"
	"github.com/enclaved/enclaved/records"
)

const secPrice = 3_600_000 // msat per unit-hour: 1 sat per second for one unit

// waitState waits (a bound, not a timing) until container id is in state.
func (f *fixture) waitState(t *testing.T, id, state string) records.Record {
	t.Helper()
	var r records.Record
	err := proc.WaitFor(context.Background(), id+" "+state, time.Minute, func(context.Context) (bool, error) {
		r = f.state(t, id)
		return r.State == state, nil
	})
	if err != nil {
		t.Fatalf("%v (it is %s: %s)", err, r.State, r.Reason)
	}
	return r
}

// waitStopped waits until the engine has container id stopped.
func (f *fixture) waitStopped(t *testing.T, id string) {
	t.Helper()
	if err := proc.WaitFor(context.Background(), id+" stopped in the engine", time.Minute, func(context.Context) (bool, error) {
		return !f.running(t, id), nil
	}); err != nil {
		t.Fatal(err)
	}
}

// A container that exits, or is OOM-killed, is charged up to the moment it
// stopped and no further; its owner is told the exit code and its last
// output; start runs it again. Exits are seen live from the engine's
// events, and at the watch's start for those that happened before.
func TestExitsStopBilling(t *testing.T) {
	imgs := testenv.Images(t)
	f := newFixtureAt(t, "inst-exits", time.Now().Truncate(time.Second))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Exited while nobody watched: the watch's sweep finds it, and charges
	// it up to its exit, not up to when it was noticed.
	f.quoted(t, "early", imgs.ExitAfter, false, 1, secPrice, [2]string{"EXIT_AFTER", "1"}, [2]string{"EXIT_CODE", "3"})
	f.pay(t, "early", "pay-early", 3_600_000)
	f.waitStopped(t, "early")
	f.clock.Add(time.Hour)
	watching := make(chan error, 1)
	go func() { watching <- f.d.Watch(ctx) }()
	r := f.waitState(t, "early", records.StateExited)
	if !strings.Contains(r.Reason, "exited with code 3") {
		t.Errorf("reason %q", r.Reason)
	}
	if charged := 3_600_000 - r.BalanceMsat; charged > 60_000 {
		t.Errorf("charged %d msat for a run of about a second (an hour passed before it was noticed)", charged)
	}
	// The notice follows the record.
	if err := proc.WaitFor(context.Background(), "the exit notice", time.Minute, func(context.Context) (bool, error) {
		return f.inbox.count("c-early stopped on its own: exited with code 3") == 1 && f.inbox.count("bye") == 1, nil
	}); err != nil {
		t.Errorf("owner not told the code and the output: %v: %+v", err, f.inbox.notices)
	}

	// Seen live: an exit, and an OOM kill.
	f.quoted(t, "live", imgs.ExitAfter, false, 1, secPrice, [2]string{"EXIT_AFTER", "1"}, [2]string{"EXIT_CODE", "0"})
	f.pay(t, "live", "pay-live", 60_000)
	if r := f.waitState(t, "live", records.StateExited); !strings.Contains(r.Reason, "exited with code 0") {
		t.Errorf("live: %q", r.Reason)
	}
	f.quoted(t, "oom", imgs.ExitAfter, false, 1, secPrice, [2]string{"ALLOC_MB", "256"}, [2]string{"EXIT_AFTER", "60"})
	f.pay(t, "oom", "pay-oom", 60_000)
	if r := f.waitState(t, "oom", records.StateExited); !strings.Contains(r.Reason, "killed for running out of memory (64 MiB for 1 unit(s))") {
		t.Errorf("oom: %q", r.Reason)
	}

	// Exited containers are not charged while time passes, and hold their
	// units for the retention window only.
	before := f.state(t, "early").BalanceMsat
	f.clock.Add(time.Hour)
	if _, err := f.d.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if after := f.state(t, "early").BalanceMsat; after != before {
		t.Errorf("an exited container was charged: %d → %d msat", before, after)
	}

	// start runs it again, metered from then.
	if err := f.owner(t, "early", deployer.CommandStart); err != nil {
		t.Fatal(err)
	}
	if r := f.state(t, "early"); r.State != records.StateRunning {
		t.Fatalf("after start: %s (%s)", r.State, r.Reason)
	}
	f.waitState(t, "early", records.StateExited) // and it exits again, seen live
	cancel()
	<-watching
}

// A restart of the instance never bills the outage: a container that kept
// running, and one the engine lost (an enclave restarted from a backup),
// are charged up to the last metering beat before the outage, then from
// the restart on.
func TestOutageIsNotBilled(t *testing.T) {
	imgs := testenv.Images(t)
	f := newFixture(t, "inst-outage")
	ctx := context.Background()
	f.quoted(t, "kept", imgs.Hello, true, 1, secPrice)
	f.pay(t, "kept", "pay-kept", 36_000_000)
	f.quoted(t, "lost", imgs.Hello, true, 1, secPrice)
	f.pay(t, "lost", "pay-lost", 36_000_000)
	f.clock.Add(time.Minute)
	if _, err := f.d.Tick(ctx); err != nil { // the last beat
		t.Fatal(err)
	}
	// The instance goes down for two hours; the engine loses "lost".
	f.clock.Add(2 * time.Hour)
	if err := f.rt.Remove(ctx, f.state(t, "lost").DockerID); err != nil {
		t.Fatal(err)
	}
	f.restart(t)
	for _, id := range []string{"kept", "lost"} {
		if r := f.state(t, id); r.State != records.StateRunning || !f.running(t, id) {
			t.Fatalf("%s after the restart: %s (%s)", id, r.State, r.Reason)
		}
	}
	f.clock.Add(time.Minute)
	if _, err := f.d.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"kept", "lost"} {
		credits, _, err := f.ledger.Sums(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		// What it is billed: its debits, and what it ran since its last
		// charge (metering charges only when due).
		if billed := credits - f.state(t, id).BalanceAt(f.clock.Now()); billed != 2*60_000 { // a minute before the outage, a minute after
			t.Errorf("%s: billed %d msat, want %d (two minutes of running, not the outage)", id, billed, 2*60_000)
		}
	}
}
