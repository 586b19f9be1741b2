package lnd

import (
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lightningnetwork/lnd/lnrpc"
	"github.com/lightningnetwork/lnd/lnrpc/invoicesrpc"
	"google.golang.org/grpc"

	"github.com/enclaved/enclaved/billing"
)

// Client is billing's Lightning node: LND over gRPC with an invoice-only
// macaroon.
type Client struct {
	conn *grpc.ClientConn
	ln   lnrpc.LightningClient
	inv  invoicesrpc.InvoicesClient
}

var _ billing.Lightning = (*Client)(nil)

// New connects to the node at ep.
func New(ep Endpoint) (*Client, error) {
	conn, err := Dial(ep)
	if err != nil {
		return nil, err
	}
	return &Client{conn: conn, ln: lnrpc.NewLightningClient(conn), inv: invoicesrpc.NewInvoicesClient(conn)}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// AddInvoice issues an invoice with a memo.
func (c *Client) AddInvoice(ctx context.Context, amountMsat int64, memo string, expiry time.Duration) (billing.Invoice, error) {
	return c.add(ctx, &lnrpc.Invoice{ValueMsat: amountMsat, Memo: memo, Expiry: int64(expiry / time.Second)})
}

// AddInvoiceWithDescriptionHash issues an invoice committing to a
// description hash instead of a memo (LNURL-pay, NIP-57).
func (c *Client) AddInvoiceWithDescriptionHash(ctx context.Context, amountMsat int64, descriptionHash []byte, expiry time.Duration) (billing.Invoice, error) {
	return c.add(ctx, &lnrpc.Invoice{ValueMsat: amountMsat, DescriptionHash: descriptionHash, Expiry: int64(expiry / time.Second)})
}

// CancelInvoice cancels an open invoice, so it can no longer be paid. An
// invoice already settled is billing.ErrSettled; one already cancelled or
// unknown to the node is no error.
func (c *Client) CancelInvoice(ctx context.Context, paymentHash string) error {
	h, err := hex.DecodeString(paymentHash)
	if err != nil {
		return fmt.Errorf("payment hash %q: %w", paymentHash, err)
	}
	_, err = c.inv.CancelInvoice(ctx, &invoicesrpc.CancelInvoiceMsg{PaymentHash: h})
	if err == nil {
		return nil
	}
	switch msg := err.Error(); {
	case strings.Contains(msg, "already settled"):
		return billing.ErrSettled
	case strings.Contains(msg, "already canceled"), strings.Contains(msg, "unable to locate invoice"):
		return nil
	}
	return fmt.Errorf("lnd cancel invoice: %w", err)
}

func (c *Client) add(ctx context.Context, inv *lnrpc.Invoice) (billing.Invoice, error) {
	if inv.ValueMsat <= 0 {
		return billing.Invoice{}, errors.New("invoice amount must be positive")
	}
	res, err := c.ln.AddInvoice(ctx, inv)
	if err != nil {
		return billing.Invoice{}, fmt.Errorf("lnd add invoice: %w", err)
	}
	// The node's own record says when it expires.
	got, err := c.ln.LookupInvoice(ctx, &lnrpc.PaymentHash{RHash: res.RHash})
	if err != nil {
		return billing.Invoice{}, fmt.Errorf("lnd lookup invoice: %w", err)
	}
	return billing.Invoice{
		PaymentHash: hex.EncodeToString(res.RHash),
		Bolt11:      res.PaymentRequest,
		ExpiresAt:   time.Unix(got.CreationDate+got.Expiry, 0),
	}, nil
}

// SubscribeSettlements streams settled invoices after the cursor after.
// LND's cursor is the invoice's settle index, in decimal.
func (c *Client) SubscribeSettlements(ctx context.Context, after string, fn func(billing.Settlement) error) error {
	afterIndex, err := settleIndex(after)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.ln.SubscribeInvoices(ctx, &lnrpc.InvoiceSubscription{SettleIndex: afterIndex})
	if err != nil {
		return fmt.Errorf("lnd subscribe invoices: %w", err)
	}
	if afterIndex == 0 {
		// LND sends no backlog for settle index 0: list what settled
		// before (the stream, already open, holds what settles now).
		if err := c.settledSoFar(ctx, fn); err != nil {
			return err
		}
	}
	for {
		inv, err := stream.Recv()
		if err != nil {
			return fmt.Errorf("lnd invoice stream: %w", err)
		}
		if inv.State != lnrpc.Invoice_SETTLED || inv.SettleIndex <= afterIndex {
			continue
		}
		if err := fn(settlement(inv)); err != nil {
			return err
		}
	}
}

// settleIndex reads a cursor: "" is settle index 0, before the first.
func settleIndex(cursor string) (uint64, error) {
	if cursor == "" {
		return 0, nil
	}
	idx, err := strconv.ParseUint(cursor, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("lnd: cursor %q is not a settle index", cursor)
	}
	return idx, nil
}

// settledSoFar calls fn for every settled invoice on the node in the order
// they settled. The node lists invoices in the order they were added, which
// is not the order they settled; each applied settlement moves the
// persisted cursor on, so applying them in list order and stopping part
// way (a crash) would leave an invoice added later but settled earlier
// behind that cursor, never to be streamed again.
func (c *Client) settledSoFar(ctx context.Context, fn func(billing.Settlement) error) error {
	var settled []*lnrpc.Invoice
	var offset uint64
	for {
		page, err := c.ln.ListInvoices(ctx, &lnrpc.ListInvoiceRequest{IndexOffset: offset, NumMaxInvoices: 1000})
		if err != nil {
			return fmt.Errorf("lnd list invoices: %w", err)
		}
		for _, inv := range page.Invoices {
			if inv.State == lnrpc.Invoice_SETTLED {
				settled = append(settled, inv)
			}
		}
		if len(page.Invoices) == 0 || page.LastIndexOffset <= offset {
			break
		}
		offset = page.LastIndexOffset
	}
	slices.SortFunc(settled, func(a, b *lnrpc.Invoice) int { return cmp.Compare(a.SettleIndex, b.SettleIndex) })
	for _, inv := range settled {
		if err := fn(settlement(inv)); err != nil {
			return err
		}
	}
	return nil
}

func settlement(inv *lnrpc.Invoice) billing.Settlement {
	return billing.Settlement{
		PaymentHash: hex.EncodeToString(inv.RHash),
		AmountMsat:  inv.AmtPaidMsat,
		Cursor:      strconv.FormatUint(inv.SettleIndex, 10),
		SettledAt:   time.Unix(inv.SettleDate, 0),
		Preimage:    hex.EncodeToString(inv.RPreimage),
	}
}
