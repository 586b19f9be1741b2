package enclave_test

import (
	"context"
	"encoding/hex"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lightningnetwork/lnd/lnrpc"

	"github.com/enclaved/enclaved/billing"
	"github.com/enclaved/enclaved/enclave"
	"github.com/enclaved/enclaved/records"

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
	if rec := inst.container(t, "cheap"); rec.State != records.StateQuoted || rec.BalanceMsat != 0 {
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
	if rec := inst.container(t, "idle"); rec.State != records.StateStopped {
		t.Fatalf("within the window: %s", rec.State)
	}
	inst.clock.Add(time.Hour + time.Minute)
	if _, err := inst.in.Deployer.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	owner.Await(t, self, "idle was removed: it stayed stopped past the retention window")
	if rec := inst.container(t, "idle"); rec.State != records.StateRemoved {
		t.Fatalf("after the window: %s", rec.State)
	}
	if after, _ := inst.in.Deployer.FreeUnits(ctx); after != free+1 {
		t.Errorf("free units %d after the removal, want %d", after, free+1)
	}
}

// slowLink holds the settlements the node reports until released, as a
// slow parent link between the node and the enclave would.
type slowLink struct {
	billing.Lightning
	mu   sync.Mutex
	open chan struct{}
}

func newSlowLink(ln billing.Lightning) *slowLink {
	l := &slowLink{Lightning: ln, open: make(chan struct{})}
	close(l.open)
	return l
}

func (l *slowLink) hold() { l.mu.Lock(); l.open = make(chan struct{}); l.mu.Unlock() }
func (l *slowLink) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.open:
	default:
		close(l.open)
	}
}

func (l *slowLink) SubscribeSettlements(ctx context.Context, after string, fn func(billing.Settlement) error) error {
	return l.Lightning.SubscribeSettlements(ctx, after, func(s billing.Settlement) error {
		l.mu.Lock()
		open := l.open
		l.mu.Unlock()
		select {
		case <-open:
		case <-ctx.Done():
			return ctx.Err()
		}
		return fn(s)
	})
}

// Deleting a container cancels its open invoices at the node, so they can
// no longer be paid. A payment that raced the removal (it settled, but was
// seen only after) is credited to nothing: it is recorded as unclaimed for
// the operator and its payer is told. A removed container takes no top-up
// and no zap.
func TestRemovalCancelsInvoicesAndLatePaymentsAreUnclaimed(t *testing.T) {
	relay := testenv.Relay(t)
	imgs := testenv.Images(t)
	ln := testenv.Lightning(t)
	var link *slowLink
	inst := startInstanceWith(t, t.TempDir(), []string{relay.URL}, func(p *enclave.Parts) {
		link = newSlowLink(p.Lightning)
		p.Lightning = link
	})
	self := inst.key.PublicKey()
	ctx := context.Background()
	owner, supporter := testenv.NewClient(t, relay.URL), testenv.NewClient(t, relay.URL)
	inst.deploy(t, owner, "deploy "+imgs.Hello.Ref+" name=gone", "gone")
	balance := inst.container(t, "gone").BalanceMsat

	racing := testenv.Invoice(t, supporter.Ask(t, "nip17", self, "topup gone 5").Text)
	open := testenv.Invoice(t, owner.Ask(t, "nip17", self, "topup gone 3").Text)
	link.hold()
	if _, err := ln.Payer.Pay(ctx, racing); err != nil {
		t.Fatal(err)
	}
	if r := owner.Ask(t, "nip17", self, "delete gone"); !strings.Contains(r.Text, "gone is deleted") {
		t.Fatalf("delete: %q", r.Text)
	}
	dec, err := ln.Payer.Client.DecodePayReq(ctx, &lnrpc.PayReqString{PayReq: open})
	if err != nil {
		t.Fatal(err)
	}
	hash, _ := hex.DecodeString(dec.PaymentHash)
	got, err := ln.Operator.Client.LookupInvoice(ctx, &lnrpc.PaymentHash{RHash: hash})
	if err != nil || got.State != lnrpc.Invoice_CANCELED {
		t.Fatalf("the removed container's open invoice at the node: %v %v, want cancelled", got.GetState(), err)
	}
	if _, err := ln.Payer.Pay(ctx, open); err == nil {
		t.Fatal("a cancelled invoice was paid")
	}

	link.release()
	supporter.Await(t, self, "Your payment of 5 sats for gone arrived after gone was removed")
	unclaimed, err := inst.in.Invoices.Unclaimed(ctx)
	if err != nil || len(unclaimed) != 1 || unclaimed[0].AmountMsat != 5_000 || unclaimed[0].Requester != supporter.PK {
		t.Fatalf("unclaimed: %+v %v", unclaimed, err)
	}
	rec := inst.container(t, "gone")
	var credits int
	inst.db.QueryRow(`SELECT COUNT(*) FROM ledger WHERE payment_hash = ?`, unclaimed[0].PaymentHash).Scan(&credits)
	// Not credited: the balance did not grow (its removal charged what it
	// ran since the deploy, a msat or so at this price on a slow machine).
	if rec.BalanceMsat > balance || credits != 0 {
		t.Errorf("the late payment was credited: balance %d → %d msat, %d ledger rows", balance, rec.BalanceMsat, credits)
	}

	if r := supporter.Ask(t, "nip17", self, "topup gone 1"); !strings.Contains(r.Text, "gone is removed; it cannot be topped up") {
		t.Errorf("topup of a removed container: %q", r.Text)
	}
	var lnurl map[string]any
	if code := inst.get(t, "/.well-known/lnurlp/gone", &lnurl); code != http.StatusNotFound {
		t.Errorf("LNURL of a removed container: %d %v", code, lnurl)
	}
}

// An owner's commands on a container are carried out in the order they
// were sent: a stop that reaches the instance after a newer start (delayed
// on a relay, or replayed after a restart) is refused, so it never stops a
// container its owner was just told runs.
func TestOlderOwnerCommandNeverUndoesANewerOne(t *testing.T) {
	relay := testenv.Relay(t)
	imgs := testenv.Images(t)
	inst := startInstance(t, t.TempDir(), []string{relay.URL})
	self := inst.key.PublicKey()
	owner := testenv.NewClient(t, relay.URL)
	inst.deploy(t, owner, "deploy "+imgs.Hello.Ref+" name=ordered", "ordered")
	stop, stopID := owner.NIP17(t, self, "stop ordered")    // sent first…
	start, startID := owner.NIP17(t, self, "start ordered") // …then this
	owner.Publish(t, start, relay.URL)
	if r := owner.AwaitFunc(t, "the start", func(r testenv.Reply) bool { return r.RefersTo(startID) }); !strings.Contains(r.Text, "ordered is already running") {
		t.Fatalf("start: %q", r.Text)
	}
	owner.Publish(t, stop, relay.URL) // …arrives last
	r := owner.AwaitFunc(t, "the stop", func(r testenv.Reply) bool { return r.RefersTo(stopID) })
	if !strings.Contains(r.Text, "that command was sent before the last one carried out on ordered") {
		t.Fatalf("late stop: %q", r.Text)
	}
	if rec := inst.container(t, "ordered"); rec.State != records.StateRunning {
		t.Fatalf("after a late, older stop: %s", rec.State)
	}
	// A newer stop is carried out.
	if r := owner.Ask(t, "nip17", self, "stop ordered"); !strings.Contains(r.Text, "ordered is stopped") {
		t.Errorf("newer stop: %q", r.Text)
	}
}

// A container that exits on its own: its owner is told the code and its
// last output, status shows it, and start runs it again.
func TestExitedContainerIsToldAndRestartable(t *testing.T) {
	relay := testenv.Relay(t)
	imgs := testenv.Images(t)
	inst := startInstance(t, t.TempDir(), []string{relay.URL})
	self := inst.key.PublicKey()
	owner := testenv.NewClient(t, relay.URL)
	owner.Send(t, "nip17", self, "deploy "+imgs.ExitAfter.Ref+" name=quits env=EXIT_AFTER=1 env=EXIT_CODE=4")
	pay(t, owner.Await(t, self, "Quote").Text)
	n := owner.Await(t, self, "quits stopped on its own: exited with code 4")
	if !strings.Contains(n.Text, "Its last lines of output:") || !strings.Contains(n.Text, "bye") || !strings.Contains(n.Text, "Send `start quits`") {
		t.Errorf("exit notice: %q", n.Text)
	}
	if r := owner.Ask(t, "nip17", self, "status quits"); !strings.Contains(r.Text, "quits: exited (exited with code 4 at") || !strings.Contains(r.Text, "kept until:") {
		t.Errorf("status: %q", r.Text)
	}
	if r := owner.Ask(t, "nip17", self, "start quits"); !strings.Contains(r.Text, "quits is running") {
		t.Errorf("start: %q", r.Text)
	}
	owner.Await(t, self, "quits stopped on its own: exited with code 4") // and again, seen again
}
