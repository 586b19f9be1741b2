package bot

import (
	"sync"
	"time"
)

type verdict int

const (
	allow  verdict = iota
	warn           // over the limit: tell the sender once per window
	refuse         // still over the limit: drop silently
)

// limiter allows rate commands per pubkey per window (a fixed window per
// pubkey, started by its first command). The first command over the limit
// gets a "slow down" reply; the rest of the window is dropped silently, so
// a flood costs the instance no replies.
type limiter struct {
	rate   int
	window time.Duration

	// The mutex protects the following elements.
	mu   sync.Mutex
	seen map[string]*bucket
}

type bucket struct {
	start  time.Time
	n      int
	warned bool
}

func newLimiter(rate int, window time.Duration) *limiter {
	return &limiter{rate: rate, window: window, seen: map[string]*bucket{}}
}

func (l *limiter) allow(pubkey string, now time.Time) verdict {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.seen[pubkey]
	if b == nil || now.Sub(b.start) >= l.window {
		if len(l.seen) > 100_000 {
			l.sweep(now)
		}
		b = &bucket{start: now}
		l.seen[pubkey] = b
	}
	b.n++
	switch {
	case b.n <= l.rate:
		return allow
	case !b.warned:
		b.warned = true
		return warn
	default:
		return refuse
	}
}

// sweep forgets pubkeys whose window has passed.
func (l *limiter) sweep(now time.Time) {
	for k, b := range l.seen {
		if now.Sub(b.start) >= l.window {
			delete(l.seen, k)
		}
	}
}
