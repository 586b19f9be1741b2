package enclave_test

import (
	"context"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lightningnetwork/lnd/lnrpc"
	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/internal/testenv"
)

// Unpaid work is bounded: anyone can ask for quotes for free, from as many
// fresh keys as they like, so open quotes are capped per sender and
// instance-wide ("busy, try again in …"), top-up invoices per container
// too; a legitimate renter is still answered; quotes that expired unpaid
// are forgotten an hour later: invoices cancelled at the node, rows
// deleted, names free again.
func TestUnpaidWorkIsBounded(t *testing.T) {
	relay := testenv.Relay(t)
	imgs := testenv.Images(t)
	ln := testenv.Lightning(t)
	inst := startInstance(t, t.TempDir(), []string{relay.URL},
		"pricing.open_quotes=5", "pricing.open_quotes_per_sender=2", "pricing.open_topups=2")
	self := inst.key.PublicKey()
	ctx := context.Background()
	deploy := func(c *testenv.Client, name string) string {
		return c.Ask(t, "nip17", self, "deploy "+imgs.Hello.Ref+" name="+name).Text
	}

	greedy := testenv.NewClient(t, relay.URL)
	first := deploy(greedy, "g1")
	deploy(greedy, "g2")
	if r := deploy(greedy, "g3"); !strings.Contains(r, "busy: you have 2 quotes waiting for payment (at most 2)") || !strings.Contains(r, "try again in 10 min") {
		t.Fatalf("a sender's third open quote: %q", r)
	}
	var busy int
	for i := range 6 { // fresh keys, one quote each
		if r := deploy(testenv.NewClient(t, relay.URL), fmt.Sprintf("f%d", i)); strings.Contains(r, "busy: 5 quotes wait for payment on this instance") {
			busy++
		} else if !strings.Contains(r, "Quote") {
			t.Fatalf("fresh key %d: %q", i, r)
		}
	}
	if busy != 3 {
		t.Errorf("%d of 6 fresh keys were told the instance is busy, want 3 (5 open quotes at most)", busy)
	}
	renter := testenv.NewClient(t, relay.URL)
	if r := renter.Ask(t, "nip17", self, "help").Text; !strings.Contains(r, "rent a container") {
		t.Errorf("help during the flood: %q", r)
	}
	var rows int
	inst.db.QueryRow(`SELECT COUNT(*) FROM containers`).Scan(&rows)
	if rows != 5 {
		t.Errorf("%d container rows after the flood, want the 5 quotes", rows)
	}

	// Top-ups of one container wait two at a time.
	pay(t, first)
	greedy.Await(t, self, "g1 is running")
	for range 2 {
		if r := greedy.Ask(t, "nip17", self, "topup g1 1").Text; !strings.Contains(r, "lnbcrt") {
			t.Fatalf("topup: %q", r)
		}
	}
	if r := greedy.Ask(t, "nip17", self, "topup g1 1").Text; !strings.Contains(r, "busy: g1 has 2 top-up invoices waiting to be paid (at most 2)") {
		t.Errorf("a third open top-up: %q", r)
	}

	// Expired quotes are forgotten an hour later.
	g2 := inst.container(t, "g2")
	var g2Invoice string
	inst.db.QueryRow(`SELECT payment_hash FROM invoices WHERE container_id = ?`, g2.ID).Scan(&g2Invoice)
	inst.clock.Add(11 * time.Minute)
	inst.in.Deployer.Tick(ctx)
	inst.clock.Add(61 * time.Minute)
	inst.in.Deployer.Tick(ctx)
	inst.db.QueryRow(`SELECT COUNT(*) FROM containers`).Scan(&rows)
	if rows != 1 {
		t.Errorf("%d container rows after the quotes expired, want the paid one", rows)
	}
	hash, _ := hex.DecodeString(g2Invoice)
	got, err := ln.Operator.Client.LookupInvoice(ctx, &lnrpc.PaymentHash{RHash: hash})
	if err != nil || got.State != lnrpc.Invoice_CANCELED {
		t.Errorf("an expired quote's invoice at the node: %v %v, want cancelled", got.GetState(), err)
	}
	if r := deploy(greedy, "g2"); !strings.Contains(r, "Quote") {
		t.Errorf("the name of a forgotten quote: %q", r)
	}
}

// In public, only notes that start with a command are answered, and no
// instance answers another's reply: two instances mentioned in one thread
// answer the person once each and never each other.
func TestMentionsAnswerCommandsOnly(t *testing.T) {
	relay := testenv.Relay(t)
	a := startInstance(t, t.TempDir(), []string{relay.URL})
	b := startInstance(t, t.TempDir(), []string{relay.URL})
	ctx := context.Background()
	user := testenv.NewClient(t, relay.URL)
	chat := user.Mention(t, a.key.PublicKey(), "what a nice instance, does it help anyone?")
	user.Publish(t, chat, relay.URL)

	both := func(text string) nostr.Event {
		evt := nostr.Event{Kind: nostr.KindTextNote, CreatedAt: nostr.Now(),
			Content: "nostr:" + a.key.Npub() + " nostr:" + b.key.Npub() + " " + text,
			Tags:    nostr.Tags{{"p", a.key.PublicKey()}, {"p", b.key.PublicKey()}}}
		if err := evt.Sign(user.SK); err != nil {
			t.Fatal(err)
		}
		user.Publish(t, evt, relay.URL)
		answered := map[string]bool{}
		user.AwaitFunc(t, "the replies of both instances", func(r testenv.Reply) bool {
			if r.RefersTo(evt.ID) {
				answered[r.From] = true
			}
			return answered[a.key.PublicKey()] && answered[b.key.PublicKey()]
		})
		return evt
	}
	both("help")
	both("status") // a second round: by now any reply loop would show

	rl, err := nostr.RelayConnect(ctx, relay.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer rl.Close()
	notes, err := rl.QuerySync(ctx, nostr.Filter{Kinds: []int{nostr.KindTextNote}, Authors: []string{a.key.PublicKey(), b.key.PublicKey()}})
	if err != nil {
		t.Fatal(err)
	}
	if len(notes) != 4 {
		t.Errorf("%d public notes by the two instances, want 4 (one per instance per command)", len(notes))
	}
	for _, n := range notes {
		if n.Tags.FindWithValue("e", chat.ID) != nil {
			t.Errorf("a note that is not a command was answered: %q", n.Content)
		}
	}
}
