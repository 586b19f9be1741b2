package zaps

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/enclaved/enclaved/internal/crashpoint"
	"github.com/enclaved/enclaved/nip"
)

// PublishPending publishes the receipt of every settled zap that has none
// yet: to the zap request's relays (at most nip.MaxReceiptRelays) and the
// instance's relays. A receipt is marked published only after a relay took
// it; one that was published but not marked (a crash in between) is built
// again identically, same id, so relays hold it once. A receipt no relay
// took is tried again after a backoff (a minute, doubling up to an hour),
// and receipts are published several at once, so those that fail never
// hold up the ones after them.
func (s *Service) PublishPending(ctx context.Context) error {
	type pending struct {
		hash, bolt11, request, preimage string
		settled                         int64
	}
	// Pages through the pending receipts, oldest first, past those
	// waiting for their next try: however many keep failing, a later
	// receipt is reached.
	var todo []pending
	now := s.Now()
	lastSettled, lastHash := int64(-1), ""
	for scanned := 0; len(todo) < publishBatch && scanned < maxScan; {
		rows, err := s.DB.QueryContext(ctx, `SELECT payment_hash, bolt11, zap_request, preimage, settled_at FROM invoices
			WHERE purpose = 'zap' AND settled_at IS NOT NULL AND receipt_id IS NULL AND (settled_at, payment_hash) > (?, ?)
			ORDER BY settled_at, payment_hash LIMIT ?`, lastSettled, lastHash, pendingScan)
		if err != nil {
			return err
		}
		n := 0
		for rows.Next() {
			var p pending
			if err := rows.Scan(&p.hash, &p.bolt11, &p.request, &p.preimage, &p.settled); err != nil {
				rows.Close()
				return err
			}
			n++
			lastSettled, lastHash = p.settled, p.hash
			if len(todo) < publishBatch && s.backoff.due(p.hash, now) {
				todo = append(todo, p)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		scanned += n
		if n < pendingScan {
			break
		}
	}
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
		sem  = make(chan struct{}, publishAtOnce)
	)
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
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
			fail(err)
			break
		}
		relays := append([]string{}, z.Relays...)
		if s.Reachable != nil {
			relays = s.Reachable(relays)
		}
		relays = dedupe(append(relays, s.Relays...))
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			pctx, cancel := context.WithTimeout(ctx, receiptTimeout)
			err := s.Publish(pctx, receipt, relays)
			cancel()
			if err != nil {
				next := s.backoff.failed(p.hash, s.Now())
				fail(fmt.Errorf("receipt for %s (next try in %s): %w", p.hash, next, err))
				return
			}
			s.backoff.done(p.hash)
			crashpoint.Hit("after-receipt-publish")
			if err := s.markPublished(ctx, p.hash, receipt.ID); err != nil {
				fail(err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Receipt publication: how many pending receipts one pass looks at and
// publishes at once.
const (
	pendingScan   = 1000
	maxScan       = 100_000
	publishAtOnce = 8
	retryFirst    = time.Minute
	retryMax      = time.Hour
)

// retries is the backoff of receipts no relay took (in memory: a restart
// tries each once again).
type retries struct {
	mu sync.Mutex
	m  map[string]retry
}

type retry struct {
	wait time.Duration
	next time.Time
}

func (r *retries) due(hash string, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return !now.Before(r.m[hash].next)
}

// failed schedules hash's next try and says how long until then.
func (r *retries) failed(hash string, now time.Time) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[string]retry{}
	}
	w := min(max(2*r.m[hash].wait, retryFirst), retryMax)
	r.m[hash] = retry{wait: w, next: now.Add(w)}
	return w
}

func (r *retries) done(hash string) {
	r.mu.Lock()
	delete(r.m, hash)
	r.mu.Unlock()
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
