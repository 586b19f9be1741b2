package publish

import (
	"context"
	"log/slog"
	"time"
)

// Pending publishes the zap receipts not yet published (zaps.Service).
type Pending interface {
	PublishPending(ctx context.Context) error
}

// Receipts publishes pending zap receipts at start (a crash may have left
// some), after each Wake, and every minute while some fail.
type Receipts struct {
	Pending Pending
	Log     *slog.Logger
	wake    chan struct{}
}

// NewReceipts returns a receipt publisher; Pending must be set before Run.
func NewReceipts(log *slog.Logger) *Receipts {
	return &Receipts{Log: log, wake: make(chan struct{}, 1)}
}

// Wake asks for a pass soon (a zap settled); it never blocks.
func (r *Receipts) Wake() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run publishes until ctx ends.
func (r *Receipts) Run(ctx context.Context) {
	for {
		err := r.Pending.PublishPending(ctx)
		if err != nil && ctx.Err() == nil {
			r.Log.Warn("publishing zap receipts", "err", err)
		}
		t := time.NewTimer(time.Minute)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-r.wake:
			t.Stop()
		case <-t.C:
		}
	}
}
