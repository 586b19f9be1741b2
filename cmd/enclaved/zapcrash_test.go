package main

import (
	"context"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/internal/crashpoint"
	"github.com/enclaved/enclaved/internal/proc"
	"github.com/enclaved/enclaved/internal/testenv"
)

// The instance is SIGKILLed between a zap's settlement and its receipt
// (after the credit commits), and between publishing the receipt and
// recording that it did. After a restart there is exactly one credit and
// one receipt on the relay.
func TestCrashBetweenZapSettlementAndReceipt(t *testing.T) {
	relay := testenv.Relay(t)
	imgs := testenv.Images(t)
	ln := testenv.Lightning(t)
	testenv.Docker(t)
	for _, point := range []string{"after-credit", "after-receipt-publish"} {
		t.Run(point, func(t *testing.T) {
			dir := t.TempDir()
			args := append([]string{"dev", "-data-dir", dir, "-relay", relay.URL, "-http", "127.0.0.1:0"}, lndFlags(t)...)
			// The deploy itself must not crash: run clean first.
			p := startProcess(t, nil, args...)
			self := npubHex(t, p.npub)
			c := testenv.NewClient(t, relay.URL)
			name := "zc-" + point[:12]
			c.Send(t, "nip17", self, "deploy "+imgs.Hello.Ref+" name="+name)
			if _, err := ln.Payer.Pay(context.Background(), testenv.Invoice(t, c.Await(t, self, "Quote").Text)); err != nil {
				t.Fatal(err)
			}
			c.Await(t, self, name+" is running")
			id := containerID(t, dir, name)
			t.Cleanup(func() { removeAll(t, id) })
			p.stop(t)

			p = startProcess(t, []string{crashpoint.Env + "=" + point}, args...)
			pr := testenv.FetchPayRequest(t, "http://"+p.http+"/.well-known/lnurlp/"+name)
			var pubkey string
			openRO(t, dir).QueryRow(`SELECT pubkey FROM containers WHERE id = ?`, id).Scan(&pubkey)
			invoice := testenv.ZapInvoice(t, pr.Callback, pubkey, relay.URL, 5000)
			if _, err := ln.Payer.Pay(context.Background(), invoice); err != nil {
				t.Fatal(err)
			}
			p.waitKilled(t)

			startProcess(t, nil, args...)
			receipts := nostr.Filter{Kinds: []int{9735}, Tags: nostr.TagMap{"p": {pubkey}}}
			testenv.Next(t, testenv.Subscribe(t, relay.URL, receipts), "receipt after the restart")
			// The restarted instance marks the receipt published; then
			// the relay holds exactly one.
			if err := waitReceiptMarked(t, dir); err != nil {
				t.Fatal(err)
			}
			if got := testenv.Query(t, relay.URL, receipts); len(got) != 1 || got[0].PubKey != pr.NostrPubkey {
				t.Errorf("%d receipts on the relay, want one by %s", len(got), pr.NostrPubkey)
			}
			if credits := countCredits(t, dir, id); credits != 2 { // the deploy and the zap
				t.Errorf("%d credits, want 2", credits)
			}
		})
	}
}

// waitReceiptMarked waits until the instance recorded the receipt.
func waitReceiptMarked(t *testing.T, dir string) error {
	return proc.WaitFor(context.Background(), "receipt recorded", time.Minute, func(context.Context) (bool, error) {
		var n int
		err := openRO(t, dir).QueryRow(`SELECT COUNT(*) FROM invoices WHERE purpose = 'zap' AND receipt_id IS NOT NULL`).Scan(&n)
		return n == 1, err
	})
}
