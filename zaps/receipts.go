package zaps

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/enclaved/enclaved/internal/crashpoint"
	"github.com/enclaved/enclaved/nip"
)

// PublishPending publishes the receipt of every settled zap that has none
// yet: to the zap request's relays (at most nip.MaxReceiptRelays) and the
// instance's relays. A receipt is marked published only after a relay took
// it; one that was published but not marked (a crash in between) is built
// again identically, same id, so relays hold it once.
func (s *Service) PublishPending(ctx context.Context) error {
	rows, err := s.DB.QueryContext(ctx, `SELECT payment_hash, bolt11, zap_request, preimage, settled_at FROM invoices
		WHERE purpose = 'zap' AND settled_at IS NOT NULL AND receipt_id IS NULL ORDER BY settled_at LIMIT ?`, publishBatch)
	if err != nil {
		return err
	}
	type pending struct {
		hash, bolt11, request, preimage string
		settled                         int64
	}
	var todo []pending
	for rows.Next() {
		var p pending
		if err := rows.Scan(&p.hash, &p.bolt11, &p.request, &p.preimage, &p.settled); err != nil {
			rows.Close()
			return err
		}
		todo = append(todo, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	var errs []error
	for _, p := range todo {
		// Validated against its container and amount when its invoice
		// was issued; read again from the stored bytes.
		z, err := nip.ParseStoredZapRequest(p.request)
		if err != nil {
			s.Log.Error("stored zap request unreadable; no receipt", "payment_hash", p.hash, "err", err)
			s.markPublished(ctx, p.hash, "unreadable")
			continue
		}
		receipt := nip.ZapReceipt(z, p.bolt11, p.preimage, time.Unix(p.settled, 0))
		if err := s.Zapper.SignEvent(ctx, &receipt); err != nil {
			return err
		}
		relays := append(append([]string{}, z.Relays...), s.Relays...)
		pctx, cancel := context.WithTimeout(ctx, receiptTimeout)
		err = s.Publish(pctx, receipt, dedupe(relays))
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("receipt for %s: %w", p.hash, err))
			continue
		}
		crashpoint.Hit("after-receipt-publish")
		if err := s.markPublished(ctx, p.hash, receipt.ID); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (s *Service) markPublished(ctx context.Context, hash, id string) error {
	_, err := s.DB.ExecContext(ctx, `UPDATE invoices SET receipt_id = ? WHERE payment_hash = ?`, id, hash)
	return err
}

func dedupe(relays []string) []string {
	seen := map[string]bool{}
	out := relays[:0]
	for _, r := range relays {
		if !seen[r] {
			seen[r] = true
			out = append(out, r)
		}
	}
	return out
}
