// Package backoff is the pause between retries of the reconnecting loops
// (relay subscriptions, the settlement stream, the link to the parent, the
// log sink). It runs on both sides of the trust boundary and does no I/O.
package backoff

import (
	"context"
	"time"
)

// Sleep waits d, or until ctx ends (then it returns ctx's error).
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
