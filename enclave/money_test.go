package enclave_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/enclaved/enclaved/deployer"
	"github.com/enclaved/enclaved/internal/testenv"
)

// A quote launches only when its own invoice, the quoted total, is paid:
// no top-up and no zap reaches an unpaid quote, so no sequence of small
// payments starts a container for less than its quote.
func TestQuoteRunsOnlyWhenItsTotalIsPaid(t *testing.T) {
	relay := testenv.Relay(t)
	imgs := testenv.Images(t)
	inst := startInstance(t, t.TempDir(), []string{relay.URL})
	self := inst.key.PublicKey()
	owner := testenv.NewClient(t, relay.URL)
	quote := owner.Ask(t, "nip17", self, "deploy "+imgs.Hello.Ref+" name=cheap hours=2").Text
	if !strings.Contains(quote, "Quote") {
		t.Fatalf("deploy: %q", quote)
	}
	r := owner.Ask(t, "nip17", self, "topup cheap 1")
	if !strings.Contains(r.Text, "cheap is not paid yet") || strings.Contains(r.Text, "lnbcrt") {
		t.Fatalf("topup of an unpaid quote: %q, want a refusal without an invoice", r.Text)
	}
	var lnurl map[string]any
	if code := inst.get(t, "/.well-known/lnurlp/cheap", &lnurl); code != http.StatusNotFound {
		t.Fatalf("LNURL of an unpaid quote: %d %v, want 404", code, lnurl)
	}
	if rec := inst.container(t, "cheap"); rec.State != deployer.StateQuoted || rec.BalanceMsat != 0 {
		t.Fatalf("after the refusals: %s with %d msat", rec.State, rec.BalanceMsat)
	}
	pay(t, quote)
	owner.Await(t, self, "cheap is running")
	if rec := inst.container(t, "cheap"); rec.BalanceMsat > 20_000 || rec.BalanceMsat < 19_000 {
		t.Errorf("paid quote of 20 sats: balance %d msat", rec.BalanceMsat)
	}
}

// Capacity is never held for free for long: a stopped container keeps its
// units, data and balance unpaid for the retention window only, as a
// paused one does; its owner is told until when, and then it is removed.
func TestStoppedIsRemovedAfterRetention(t *testing.T) {
	relay := testenv.Relay(t)
	imgs := testenv.Images(t)
	inst := startInstance(t, t.TempDir(), []string{relay.URL}, "pricing.retention=24h")
	self := inst.key.PublicKey()
	owner := testenv.NewClient(t, relay.URL)
	ctx := context.Background()
	inst.deploy(t, owner, "deploy "+imgs.Hello.Ref+" name=idle", "idle")
	before := inst.clock.Now()
	r := owner.Ask(t, "nip17", self, "stop idle")
	until := inst.container(t, "idle").PausedAt.Add(24 * time.Hour)
	if until.Before(before.Add(24*time.Hour)) || until.After(inst.clock.Now().Add(24*time.Hour)) {
		t.Fatalf("retention counts from %s, not from the stop", until.Add(-24*time.Hour))
	}
	at := until.UTC().Format("2006-01-02 15:04 UTC")
	if !strings.Contains(r.Text, "idle is stopped") || !strings.Contains(r.Text, "until "+at) {
		t.Fatalf("stop: %q, want the removal time %s", r.Text, at)
	}
	if r := owner.Ask(t, "nip17", self, "status idle"); !strings.Contains(r.Text, "kept until: "+at) {
		t.Errorf("status of a stopped container: %q", r.Text)
	}
	free, _ := inst.in.Deployer.FreeUnits(ctx)
	inst.clock.Add(23 * time.Hour)
	if _, err := inst.in.Deployer.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if rec := inst.container(t, "idle"); rec.State != deployer.StateStopped {
		t.Fatalf("within the window: %s", rec.State)
	}
	inst.clock.Add(time.Hour + time.Minute)
	if _, err := inst.in.Deployer.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	owner.Await(t, self, "idle was removed: it stayed stopped past the retention window")
	if rec := inst.container(t, "idle"); rec.State != deployer.StateRemoved {
		t.Fatalf("after the window: %s", rec.State)
	}
	if after, _ := inst.in.Deployer.FreeUnits(ctx); after != free+1 {
		t.Errorf("free units %d after the removal, want %d", after, free+1)
	}
}
