package enclave_test

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lightningnetwork/lnd/lnrpc"
	"github.com/nbd-wtf/go-nostr"
	"github.com/nbd-wtf/go-nostr/nip04"

	"github.com/enclaved/enclaved/internal/testenv"
)

// Keys are free: a flood of deploys from fresh keys, one each, makes at
// most pricing.open_quotes quotes (rows and invoices at the node); the
// rest are told the instance is busy, and a renter's help is answered
// meanwhile. 200 deploys in CI, 1,000 with ENCLAVED_ABUSE_FULL=1; the
// renter's waits are logged (timings are not asserted).
func TestDeployFloodFromFreshKeys(t *testing.T) {
	n := 200
	if os.Getenv("ENCLAVED_ABUSE_FULL") != "" {
		n = 1000
	}
	relay := testenv.Relay(t)
	imgs := testenv.Images(t)
	ln := testenv.Lightning(t)
	inst := startInstance(t, t.TempDir(), []string{relay.URL})
	self := inst.key.PublicKey()
	ctx := context.Background()
	openAtNode := func() map[string]bool {
		t.Helper()
		res, err := ln.Operator.Client.ListInvoices(ctx, &lnrpc.ListInvoiceRequest{PendingOnly: true, NumMaxInvoices: 100_000})
		if err != nil {
			t.Fatal(err)
		}
		open := map[string]bool{}
		for _, inv := range res.Invoices {
			if inv.State == lnrpc.Invoice_OPEN {
				open[string(inv.RHash)] = true
			}
		}
		return open
	}
	before := openAtNode() // other tests' invoices on the shared node
	start := time.Now()

	answered := testenv.Subscribe(t, relay.URL, nostr.Filter{Kinds: []int{nostr.KindEncryptedDirectMessage}, Authors: []string{self},
		Since: func() *nostr.Timestamp { s := nostr.Now(); return &s }()})
	flooded := make(chan error, 1)
	go func() {
		rl, err := nostr.RelayConnect(ctx, relay.URL)
		if err != nil {
			flooded <- err
			return
		}
		defer rl.Close()
		for range n {
			sk := nostr.GeneratePrivateKey()
			ss, _ := nip04.ComputeSharedSecret(self, sk)
			ct, _ := nip04.Encrypt("deploy "+imgs.Hello.Ref, ss)
			evt := nostr.Event{Kind: nostr.KindEncryptedDirectMessage, CreatedAt: nostr.Now(), Content: ct, Tags: nostr.Tags{{"p", self}}}
			evt.Sign(sk)
			if err := rl.Publish(ctx, evt); err != nil {
				flooded <- err
				return
			}
		}
		flooded <- nil
	}()

	renter := testenv.NewClient(t, relay.URL)
	var waits []time.Duration
	for range 5 {
		began := time.Now()
		if r := renter.Ask(t, "nip17", self, "help").Text; !strings.Contains(r, "rent a container") {
			t.Fatalf("help during the flood: %q", r)
		}
		waits = append(waits, time.Since(began))
	}
	if err := <-flooded; err != nil {
		t.Fatal(err)
	}
	for got := 0; got < n; {
		evt := testenv.Next(t, answered, "the instance's answers to the flood")
		if evt.Tags.FindWithValue("p", renter.PK) == nil {
			got++
		}
	}
	elapsed := time.Since(start)

	var rows, invoices int
	inst.db.QueryRow(`SELECT COUNT(*) FROM containers`).Scan(&rows)
	inst.db.QueryRow(`SELECT COUNT(*) FROM invoices`).Scan(&invoices)
	open := 0
	for h := range openAtNode() {
		if !before[h] {
			open++
		}
	}
	limit := int(4 * inst.in.Deployer.Capacity()) // pricing.open_quotes' default
	if rows > limit || invoices > limit || open > limit || rows == 0 {
		t.Errorf("after %d deploys from fresh keys: %d container rows, %d invoice rows, %d open invoices at the node; want at most %d each",
			n, rows, invoices, open, limit)
	}
	slices.Sort(waits)
	t.Logf("%d deploys from fresh keys answered in %s: %d rows, %d invoices, %d open at the node; help answered in %v (max %s)",
		n, elapsed.Round(time.Millisecond), rows, invoices, open, waits, waits[len(waits)-1].Round(time.Millisecond))
}
