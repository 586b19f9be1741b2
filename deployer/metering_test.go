package deployer_test

import (
	"context"
	"testing"
	"time"

	"github.com/enclaved/enclaved/deployer"
	"github.com/enclaved/enclaved/internal/testenv"
	"github.com/enclaved/enclaved/records"
)

// A metering pass charges what is due, not every running container: a
// balance that lasts is charged about hourly, yet what it shows is what it
// has now; one that runs out is stopped at the moment it does, and the pass
// before says when that is.
func TestMeteringChargesWhatIsDue(t *testing.T) {
	imgs := testenv.Images(t)
	f := newFixture(t, "inst-due", func(c *deployer.Config) { c.LowBalance = time.Minute })
	ctx := context.Background()
	f.quoted(t, "long", imgs.Hello, false, 1, secPrice)
	f.pay(t, "long", "pay-long", 3*3_600_000) // three hours
	f.quoted(t, "short", imgs.Hello, false, 1, secPrice)
	f.pay(t, "short", "pay-short", 15*60_000) // fifteen minutes
	start := f.clock.Now()

	// Passes as the metering loop runs them: at the time each returns.
	var warned, paused time.Duration
	for f.clock.Now().Before(start.Add(20 * time.Minute)) {
		next, err := f.d.Tick(ctx)
		if err != nil {
			t.Fatal(err)
		}
		at := f.clock.Now().Sub(start)
		if warned == 0 && f.inbox.count("c-short has") == 1 {
			warned = at
		}
		if paused == 0 && f.state(t, "short").State == records.StatePaused {
			paused = at
		}
		f.clock.Add(next.Sub(f.clock.Now()))
	}
	if warned != 14*time.Minute || paused != 15*time.Minute {
		t.Errorf("short warned at %s, paused at %s; want 14 min and 15 min", warned, paused)
	}
	if r := f.state(t, "short"); r.BalanceMsat != 0 {
		t.Errorf("short paused with %d msat", r.BalanceMsat)
	}
	if _, debits, _ := f.ledger.Sums(ctx, "short"); debits != 15*60_000 {
		t.Errorf("short charged %d msat, want all 15 min", debits)
	}
	if _, debits, _ := f.ledger.Sums(ctx, "long"); debits != 0 {
		t.Errorf("long charged %d msat at 20 min: not due yet", debits)
	}
	now := f.clock.Now()
	if got, want := f.state(t, "long").BalanceAt(now), int64(3*3_600_000)-now.Sub(start).Milliseconds(); got != want {
		t.Errorf("long shows %d msat at %s, want %d", got, now.Sub(start), want)
	}

	// An hour after its start, long is charged: the ledger stays recent.
	f.clock.Add(start.Add(61 * time.Minute).Sub(f.clock.Now()))
	if _, err := f.d.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if _, debits, _ := f.ledger.Sums(ctx, "long"); debits != 61*60_000 {
		t.Errorf("long charged %d msat at 61 min, want %d", debits, 61*60_000)
	}
}
