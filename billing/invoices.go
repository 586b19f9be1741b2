package billing

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/enclaved/enclaved/nip"
	"github.com/enclaved/enclaved/store"
)

// Invoices issues, records and cancels the instance's invoices: it owns
// the invoices table. Quotes, top-ups and zaps all issue through it, so an
// invoice is always created at the node, recorded, and saved outside the
// enclave before anyone sees it.
type Invoices struct {
	DB        *store.DB
	Lightning Lightning
	// Durable (optional) returns once everything committed so far is
	// saved outside the enclave (backup.Backuper.Sync).
	Durable func(ctx context.Context) error
	Now     func() time.Time
	Log     *slog.Logger
}

// Request is an invoice to issue.
type Request struct {
	ContainerID string
	Purpose     string // deploy, topup, zap, lnurl
	AmountMsat  int64
	// Memo, or DescriptionHash (LNURL-pay, NIP-57: sha256 of what the
	// payer was shown) when set.
	Memo            string
	DescriptionHash []byte
	Expiry          time.Duration
	// Requester is who asked for it (hex pubkey), to be told if the
	// payment comes too late; "" if unknown.
	Requester string
	// ZapRequest is the kind-9734 JSON as received (zaps only).
	ZapRequest string
}

// invoiceTimeout bounds the node's answer; durableTimeout the save.
const (
	invoiceTimeout = 15 * time.Second
	durableTimeout = time.Minute
)

// Issue creates the invoice at the node, records it and returns once it is
// saved: only then may it be handed out.
func (v *Invoices) Issue(ctx context.Context, r Request) (Invoice, error) {
	ictx, cancel := context.WithTimeout(ctx, invoiceTimeout)
	var inv Invoice
	var err error
	if r.DescriptionHash != nil {
		inv, err = v.Lightning.AddInvoiceWithDescriptionHash(ictx, r.AmountMsat, r.DescriptionHash, r.Expiry)
	} else {
		inv, err = v.Lightning.AddInvoice(ictx, r.AmountMsat, r.Memo, r.Expiry)
	}
	cancel()
	if err != nil {
		return Invoice{}, err
	}
	inv.Description, inv.AmountMsat, inv.CreatedAt = r.Memo, r.AmountMsat, v.Now()
	if err := v.Record(ctx, r, inv); err != nil {
		return Invoice{}, err
	}
	if v.Durable != nil {
		dctx, cancel := context.WithTimeout(ctx, durableTimeout)
		err := v.Durable(dctx)
		cancel()
		if err != nil {
			return Invoice{}, fmt.Errorf("saving the instance's state: %w", err)
		}
	}
	return inv, nil
}

// Record records inv, which the node issued for r. Issue is how an
// invoice is handed out (it records it with this, then waits until it is
// saved); tests build their invoices with it too.
func (v *Invoices) Record(ctx context.Context, r Request, inv Invoice) error {
	var zr sql.NullString
	if r.ZapRequest != "" {
		zr = sql.NullString{String: r.ZapRequest, Valid: true}
	}
	if _, err := v.DB.ExecContext(ctx, `INSERT INTO invoices (payment_hash, container_id, purpose, amount_msat, bolt11, expires_at, created_at, zap_request, requester)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, inv.PaymentHash, r.ContainerID, r.Purpose, r.AmountMsat, inv.Bolt11, inv.ExpiresAt.Unix(),
		v.Now().Unix(), zr, r.Requester); err != nil {
		return fmt.Errorf("recording invoice: %w", err)
	}
	return nil
}

// CancelOpen cancels a container's unpaid, unexpired invoices at the node,
// so they cannot be paid any more (its container is removed, or its quote
// withdrawn), and records each cancel. One the node says was paid already
// is left to the settlement stream.
func (v *Invoices) CancelOpen(ctx context.Context, containerID string) error {
	now := v.Now()
	hashes, err := v.DB.Strings(ctx, `SELECT payment_hash FROM invoices
		WHERE container_id = ? AND settled_at IS NULL AND cancelled_at IS NULL AND expires_at > ?`, containerID, now.Unix())
	if err != nil {
		return err
	}
	var errs []error
	for _, h := range hashes {
		err := v.Lightning.CancelInvoice(ctx, h)
		if errors.Is(err, ErrSettled) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if _, err := v.DB.ExecContext(ctx, `UPDATE invoices SET cancelled_at = ? WHERE payment_hash = ?`, now.Unix(), h); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Forget cancels, at the node, every invoice of a container none of whose
// invoices was ever paid (an expired or withdrawn quote) and deletes them:
// nothing of the quote is kept. It refuses a container with a settled one.
func (v *Invoices) Forget(ctx context.Context, containerID string) error {
	rows, err := v.DB.QueryContext(ctx, `SELECT payment_hash, settled_at IS NOT NULL FROM invoices WHERE container_id = ?`, containerID)
	if err != nil {
		return err
	}
	var hashes []string
	for rows.Next() {
		var h string
		var settled bool
		if err := rows.Scan(&h, &settled); err != nil {
			rows.Close()
			return err
		}
		if settled {
			rows.Close()
			return fmt.Errorf("container %s has a paid invoice", containerID)
		}
		hashes = append(hashes, h)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, h := range hashes {
		if err := v.Lightning.CancelInvoice(ctx, h); err != nil {
			return err // ErrSettled too: it is the stream's now
		}
	}
	_, err = v.DB.ExecContext(ctx, `DELETE FROM invoices WHERE container_id = ? AND settled_at IS NULL`, containerID)
	return err
}

// Open counts the invoices that can still be paid (unpaid, not cancelled,
// not expired), by purpose (deploy, topup, zap, lnurl; one none has is
// absent).
func (v *Invoices) Open(ctx context.Context) (map[string]int64, error) {
	return v.DB.Counts(ctx, `SELECT purpose, COUNT(*) FROM invoices
		WHERE settled_at IS NULL AND cancelled_at IS NULL AND expires_at > ? GROUP BY purpose`, v.Now().Unix())
}

// Unclaimed is a payment that settled after its container was removed.
type Unclaimed struct {
	PaymentHash string
	ContainerID string
	AmountMsat  int64
	Requester   string
	At          time.Time
}

// Unclaimed lists every unclaimed payment, oldest first.
func (v *Invoices) Unclaimed(ctx context.Context) ([]Unclaimed, error) {
	return listUnclaimed(ctx, v.DB.DB)
}

func listUnclaimed(ctx context.Context, db *sql.DB) ([]Unclaimed, error) {
	rows, err := db.QueryContext(ctx, `SELECT payment_hash, container_id, amount_msat, requester, at FROM unclaimed ORDER BY at, payment_hash`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Unclaimed
	for rows.Next() {
		var u Unclaimed
		var at int64
		if err := rows.Scan(&u.PaymentHash, &u.ContainerID, &u.AmountMsat, &u.Requester, &at); err != nil {
			return nil, err
		}
		u.At = time.UnixMilli(at)
		out = append(out, u)
	}
	return out, rows.Err()
}

// Unpaid top-up and zap invoices are forgotten invoiceGrace after they
// expired (a payment racing the expiry has settled by then, or never
// will), at most prunePerPass a pass: anyone can ask for them for free.
const (
	invoiceGrace = time.Hour
	prunePerPass = 1000
)

// PruneAllExpired runs PruneExpired until a pass finds less than a full
// pass's worth, or ctx ends; it returns how many it deleted in all.
func (v *Invoices) PruneAllExpired(ctx context.Context) (int, error) {
	total := 0
	for {
		n, err := v.PruneExpired(ctx)
		total += n
		if err != nil || n < prunePerPass || ctx.Err() != nil {
			return total, err
		}
	}
}

// PruneExpired cancels at the node and deletes the unpaid top-up and zap
// invoices that expired over an hour ago (quotes' invoices go with their
// quote, Forget). One the node says was paid is left to the settlement
// stream. It returns how many it deleted.
func (v *Invoices) PruneExpired(ctx context.Context) (int, error) {
	hashes, err := v.DB.Strings(ctx, `SELECT payment_hash FROM invoices
		WHERE purpose IN ('topup', 'zap', 'lnurl') AND settled_at IS NULL AND expires_at < ? LIMIT ?`,
		v.Now().Add(-invoiceGrace).Unix(), prunePerPass)
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, h := range hashes {
		if err := v.Lightning.CancelInvoice(ctx, h); err != nil {
			if !errors.Is(err, ErrSettled) {
				errs = append(errs, err)
			}
			continue
		}
		res, err := v.DB.ExecContext(ctx, `DELETE FROM invoices WHERE payment_hash = ? AND settled_at IS NULL`, h)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if k, _ := res.RowsAffected(); k == 1 {
			n++
		}
	}
	return n, errors.Join(errs...)
}

// ZapSender is who sent the zap paid by paymentHash, as its zap request
// says (hex pubkey); "" if the invoice is not a zap's.
func (v *Invoices) ZapSender(ctx context.Context, paymentHash string) (string, error) {
	var raw sql.NullString
	if err := v.DB.QueryRowContext(ctx, `SELECT zap_request FROM invoices WHERE payment_hash = ?`, paymentHash).Scan(&raw); err != nil || !raw.Valid {
		return "", err
	}
	z, err := nip.ParseStoredZapRequest(raw.String)
	if err != nil {
		return "", err
	}
	return z.Sender, nil
}
