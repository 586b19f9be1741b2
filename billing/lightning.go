package billing

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/enclaved/enclaved/internal/backoff"
)

// Invoice is an invoice the node issued.
type Invoice struct {
	PaymentHash string // hex
	Bolt11      string
	ExpiresAt   time.Time
	// Set by Invoices.Issue (a Lightning backend need not): what the
	// invoice says it is for, its amount and when it was issued.
	Description string
	AmountMsat  int64
	CreatedAt   time.Time
}

// Lightning is what billing needs from a Lightning node; one package per
// backend implements it (billing/lnd for LND). docs/lightning.md says how
// to add one.
type Lightning interface {
	// AddInvoice issues an invoice for amountMsat that expires after expiry.
	AddInvoice(ctx context.Context, amountMsat int64, memo string, expiry time.Duration) (Invoice, error)
	// AddInvoiceWithDescriptionHash issues an invoice that commits to a
	// description's sha256 instead of a memo (LNURL-pay, NIP-57 zaps).
	AddInvoiceWithDescriptionHash(ctx context.Context, amountMsat int64, descriptionHash []byte, expiry time.Duration) (Invoice, error)
	// CancelInvoice cancels an open invoice so it cannot be paid any
	// more; ErrSettled if it was paid already.
	CancelInvoice(ctx context.Context, paymentHash string) error
	// SubscribeSettlements calls fn for every invoice settled after the
	// cursor after ("": every settlement the node has), backlog first,
	// then live, until the stream fails or ctx ends. An error from fn ends
	// it too.
	//
	// The cursor is the backend's own and opaque to billing: each
	// Settlement carries one (non-empty) meaning "resume after this
	// settlement", and after is the last one billing applied. The
	// contract: when fn is called with a settlement, every settlement that
	// a subscription after its cursor would not deliver has been delivered
	// already (earlier in this call, or it was at or before after).
	// Delivering a settlement twice, or an older cursor after a newer one,
	// is allowed: it costs a replay, and a payment is credited once per
	// payment hash. An after the backend cannot read (another backend's)
	// is an error, never read as "".
	SubscribeSettlements(ctx context.Context, after string, fn func(Settlement) error) error
}

// ErrSettled is a cancel that came too late: the invoice was paid.
var ErrSettled = errors.New("invoice already settled")

// WatchSettlements applies settlements as the node reports them, until ctx
// ends. Whenever the stream drops it resubscribes after the persisted
// cursor, so nothing settled meanwhile is missed and nothing is credited
// twice. onCredit (optional) runs after each new credit has committed.
//
// It is what applies settlements with their cursors: one watcher per
// ledger, in the backend's order (cursor.go says why the ledger relies on
// that rather than comparing cursors).
func WatchSettlements(ctx context.Context, ln Lightning, l *Ledger, log *slog.Logger, onCredit func(Credit)) error {
	wait := 100 * time.Millisecond
	for {
		cursor, err := l.Cursor(ctx)
		if err == nil {
			err = ln.SubscribeSettlements(ctx, cursor, func(s Settlement) error {
				c, err := l.ApplySettlement(ctx, s)
				if err != nil {
					return err
				}
				wait = 100 * time.Millisecond
				if c.Applied && c.Unclaimed {
					log.Warn("payment for a removed container recorded as unclaimed", "container", c.ContainerID, "purpose", c.Purpose,
						"amount_msat", c.AmountMsat, "payment_hash", c.PaymentHash)
				} else if c.Applied {
					log.Info("payment credited", "container", c.ContainerID, "purpose", c.Purpose,
						"amount_msat", c.AmountMsat, "balance_msat", c.BalanceMsat)
				}
				if c.Applied {
					if onCredit != nil {
						onCredit(c)
					}
				}
				return nil
			})
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		log.Warn("invoice stream ended; resubscribing", "err", err, "cursor", cursor, "after", wait)
		if err := backoff.Sleep(ctx, wait); err != nil {
			return err
		}
		wait = min(2*wait, 5*time.Second)
	}
}
