package deployer_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/lightningnetwork/lnd/lnrpc"

	"github.com/enclaved/enclaved/billing"
	"github.com/enclaved/enclaved/deployer"
	"github.com/enclaved/enclaved/internal/testenv"
	"github.com/enclaved/enclaved/nip"
)

func TestQuote(t *testing.T) {
	imgs := testenv.Images(t)
	ln := testenv.Lightning(t)
	f := newFixture(t, "inst-quote")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client := testenv.InvoiceClient(t, ln.Operator)
	q := &deployer.Quoter{D: f.d, Images: &deployer.Resolver{}, Invoices: &billing.Invoices{DB: f.db, Lightning: client, Now: f.clock.Now},
		Pricing: deployer.Pricing{PriceMsatPerUnitHour: 10_000, QuoteExpiry: 10 * time.Minute}}

	cmd, _ := nip.ParseCommand("deploy " + imgs.Hello.Tag + " units=2 hours=3 env=A=1")
	quote, err := q.Quote(ctx, "owner", "nip17", cmd)
	if err != nil {
		t.Fatal(err)
	}
	if quote.TotalMsat != 2*3*10_000 || quote.Image.Pinned != imgs.Hello.Ref || !strings.HasPrefix(quote.Name, "hello-") {
		t.Errorf("quote %+v", quote)
	}
	dec, err := ln.Payer.Client.DecodePayReq(ctx, &lnrpc.PayReqString{PayReq: quote.Invoice.Bolt11})
	if err != nil {
		t.Fatal(err)
	}
	if dec.NumMsat != quote.TotalMsat || dec.Expiry != 600 || !strings.Contains(dec.Description, quote.ContainerID) {
		t.Errorf("invoice: %d msat, expiry %d, memo %q", dec.NumMsat, dec.Expiry, dec.Description)
	}
	rec, err := f.d.Get(ctx, quote.ContainerID)
	if err != nil || rec.State != deployer.StateQuoted || len(rec.Env) != 1 || rec.Env[0] != [2]string{"A", "1"} || !rec.HasVolumes {
		t.Errorf("record %+v %v", rec, err)
	}

	refusals := map[string]string{
		"deploy " + imgs.Hello.Tag + " units=5":            "4 free unit(s) of 4; you asked for 5",
		"deploy " + imgs.Hello.Tag + " name=" + quote.Name: "is taken",
		"deploy " + imgs.Hello.Tag + "-missing":            "not found",
	}
	for text, want := range refusals {
		cmd, err := nip.ParseCommand(text)
		if err != nil {
			t.Fatal(err)
		}
		_, err = q.Quote(ctx, "owner", "nip17", cmd)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", text, err, want)
		}
	}
	// An image larger than the units' disk is refused.
	small := deployer.New(f.db, f.rt, deployer.Config{Unit: deployer.Unit{DiskBytes: 1024}, CapacityUnits: 4}, f.clock.Now, nil, nil)
	q.D = small
	cmd, _ = nip.ParseCommand("deploy " + imgs.Hello.Tag)
	if _, err := q.Quote(ctx, "owner", "nip17", cmd); err == nil || !strings.Contains(err.Error(), "ask for more units") {
		t.Errorf("oversized image: %v", err)
	}
}
