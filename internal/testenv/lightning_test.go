package testenv_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lightningnetwork/lnd/lnrpc"

	"github.com/enclaved/enclaved/billing/lnd"
	"github.com/enclaved/enclaved/internal/testenv"
)

// An invoice created on the operator with only invoice.macaroon (what the
// enclave gets) is paid from the payer and seen settled on the invoice stream.
func TestLightningInvoicePaidAndSettled(t *testing.T) {
	ln := testenv.Lightning(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	ep, err := ln.Operator.Endpoint("invoice")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := lnd.Dial(ep)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	inv := lnrpc.NewLightningClient(conn)

	// invoice.macaroon cannot touch channels or send money.
	_, err = inv.ListChannels(ctx, &lnrpc.ListChannelsRequest{})
	if err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("ListChannels with invoice.macaroon: %v, want permission denied", err)
	}

	stream, err := inv.SubscribeInvoices(ctx, &lnrpc.InvoiceSubscription{})
	if err != nil {
		t.Fatal(err)
	}
	const msat = 21_000_000
	added, err := inv.AddInvoice(ctx, &lnrpc.Invoice{ValueMsat: msat, Memo: "testenv", Expiry: 600})
	if err != nil {
		t.Fatal(err)
	}
	pay, err := ln.Payer.Pay(ctx, added.PaymentRequest)
	if err != nil {
		t.Fatal(err)
	}
	if pay.ValueMsat != msat {
		t.Errorf("payer paid %d msat, want %d", pay.ValueMsat, msat)
	}
	for {
		got, err := stream.Recv()
		if err != nil {
			t.Fatalf("invoice stream: %v", err)
		}
		if string(got.RHash) != string(added.RHash) || got.State != lnrpc.Invoice_SETTLED {
			continue
		}
		if got.AmtPaidMsat != msat {
			t.Errorf("settled for %d msat, want %d", got.AmtPaidMsat, msat)
		}
		if got.SettleIndex == 0 {
			t.Error("settled invoice has no settle index to resume from")
		}
		return
	}
}

// The operator can pay the payer too (the channel was opened with a push).
func TestLightningBothDirections(t *testing.T) {
	ln := testenv.Lightning(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	added, err := ln.Payer.AddInvoice(ctx, 5_000, "refund")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ln.Operator.Pay(ctx, added.PaymentRequest); err != nil {
		t.Fatal(err)
	}
	// Paying the same invoice twice is refused.
	if _, err := ln.Operator.Pay(ctx, added.PaymentRequest); err == nil {
		t.Fatal("second payment of one invoice succeeded")
	} else if errors.Is(err, context.DeadlineExceeded) {
		t.Fatal(err)
	}
}

// The enclave pins the node's own certificate: presented with another
// node's certificate (as an intercepting parent would), the call fails.
func TestLNDConnectionIsPinnedToTheNodeCertificate(t *testing.T) {
	ln := testenv.Lightning(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ep, err := ln.Operator.Endpoint("invoice")
	if err != nil {
		t.Fatal(err)
	}
	other, err := ln.Payer.Endpoint("invoice")
	if err != nil {
		t.Fatal(err)
	}
	ep.TLSCert = other.TLSCert
	conn, err := lnd.Dial(ep)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = lnrpc.NewLightningClient(conn).AddInvoice(ctx, &lnrpc.Invoice{ValueMsat: 1000})
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("call with a foreign certificate: %v, want a certificate error", err)
	}
}
