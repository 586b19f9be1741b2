package billing_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lightningnetwork/lnd/lnrpc"

	"github.com/enclaved/enclaved/billing"
	"github.com/enclaved/enclaved/images"
	"github.com/enclaved/enclaved/internal/testenv"
	"github.com/enclaved/enclaved/nip"
	"github.com/enclaved/enclaved/records"
	"github.com/enclaved/enclaved/store"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var t0 = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

func openDB(t testing.TB) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "enclaved.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestQuote(t *testing.T) {
	imgs := testenv.Images(t)
	ln := testenv.Lightning(t)
	db := openDB(t)
	clock := testenv.NewClock(t0)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client := testenv.InvoiceClient(t, ln.Operator)
	recs := records.New(db, clock.Now)
	q := &billing.Quoter{Records: recs, Images: &images.Resolver{}, Invoices: &billing.Invoices{DB: db, Lightning: client, Now: clock.Now},
		Pricing: billing.Pricing{PriceMsatPerUnitHour: 10_000, QuoteExpiry: 10 * time.Minute},
		Unit:    records.Unit{DiskBytes: 128 << 20}, CapacityUnits: 4, Now: clock.Now}

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
	rec, err := recs.Get(ctx, quote.ContainerID)
	if err != nil || rec.State != records.StateQuoted || len(rec.Env) != 1 || rec.Env[0] != [2]string{"A", "1"} || !rec.HasVolumes || rec.AdminPublic {
		t.Errorf("record %+v %v", rec, err)
	}
	// admin=yes: the owner agreed to be named in the container's public
	// status; it is kept on the record.
	cmd, _ = nip.ParseCommand("deploy " + imgs.Hello.Tag + " admin=yes")
	public, err := q.Quote(ctx, "owner", "nip17", cmd)
	if err != nil {
		t.Fatal(err)
	}
	if rec, err := recs.Get(ctx, public.ContainerID); err != nil || !rec.AdminPublic {
		t.Errorf("admin=yes: record %+v %v", rec, err)
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
	q.Unit = records.Unit{DiskBytes: 1024}
	cmd, _ = nip.ParseCommand("deploy " + imgs.Hello.Tag)
	if _, err := q.Quote(ctx, "owner", "nip17", cmd); err == nil || !strings.Contains(err.Error(), "ask for more units") {
		t.Errorf("oversized image: %v", err)
	}
}
