// Package ratelog keeps the warnings a stranger can cause (a refused
// connection, one more over a cap) to one line per interval, so that a
// flood of them neither floods the log nor hides everything else in it.
// Both sides of the trust boundary use it.
package ratelog

import (
	"log/slog"
	"sync"
	"time"
)

// DefaultEvery is a Warner's interval when it sets none.
const DefaultEvery = 10 * time.Second

// Warner logs one warning per interval; the ones in between are counted,
// and the next line that goes out says how many were left out.
type Warner struct {
	Every time.Duration // default DefaultEvery

	mu      sync.Mutex
	next    time.Time
	skipped int
}

// Warn logs msg with args to log unless a line went out less than Every
// ago, in which case it is only counted. A line that follows skipped ones
// carries "skipped", their number.
func (w *Warner) Warn(log *slog.Logger, msg string, args ...any) {
	if log == nil {
		return
	}
	w.mu.Lock()
	now := time.Now()
	if now.Before(w.next) {
		w.skipped++
		w.mu.Unlock()
		return
	}
	every := w.Every
	if every <= 0 {
		every = DefaultEvery
	}
	w.next = now.Add(every)
	skipped := w.skipped
	w.skipped = 0
	w.mu.Unlock()
	if skipped > 0 {
		args = append(args, "skipped", skipped)
	}
	log.Warn(msg, args...)
}
