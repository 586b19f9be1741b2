package zaps

import (
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/enclaved/enclaved/internal/clientaddr"
	"golang.org/x/time/rate"
)

// Every callback creates an invoice at the operator's node and a row here,
// for free: callbacks are limited per client address and instance-wide.
// A client is an IPv4 address or an IPv6 /64 (one subscriber's prefix).

// maxClients bounds the per-client buckets kept; beyond, idle ones are
// forgotten, and if none is idle new clients wait for the global budget.
const maxClients = 10_000

// limiter is a token bucket per client and one for everyone, each holding
// a minute's worth (bursts of up to a minute's rate).
type limiter struct {
	perClient, global rate.Limit
	clientBurst       int

	mu      sync.Mutex
	all     *rate.Limiter
	clients map[netip.Prefix]*rate.Limiter
}

func newLimiter(perClientPerMinute, globalPerMinute int) *limiter {
	l := &limiter{
		perClient:   rate.Limit(float64(perClientPerMinute) / 60),
		global:      rate.Limit(float64(globalPerMinute) / 60),
		clientBurst: perClientPerMinute,
		clients:     map[netip.Prefix]*rate.Limiter{},
	}
	l.all = rate.NewLimiter(l.global, globalPerMinute)
	return l
}

// limitError is a refused callback: its reason and the HTTP status.
type limitError struct {
	status int
	reason string
}

func (e *limitError) Error() string { return e.reason }

// allow takes a token for remote (a RemoteAddr) and the instance at now,
// or says how long to wait.
func (l *limiter) allow(remote string, now time.Time) *limitError {
	key := clientaddr.Key(remote)
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.clients[key]
	if c == nil {
		if len(l.clients) >= maxClients {
			l.sweep(now)
		}
		if len(l.clients) >= maxClients {
			return &limitError{503, fmt.Sprintf("busy: too many clients ask for invoices; try again in %s", wait(l.all, now))}
		}
		c = rate.NewLimiter(l.perClient, l.clientBurst)
		l.clients[key] = c
	}
	mine := c.ReserveN(now, 1)
	if !mine.OK() || mine.DelayFrom(now) > 0 {
		mine.CancelAt(now)
		return &limitError{429, fmt.Sprintf("too many invoices asked for from your address (at most %d a minute); try again in %s",
			l.clientBurst, wait(c, now))}
	}
	if !l.all.AllowN(now, 1) {
		mine.CancelAt(now) // refused for everyone: the client's token goes back
		return &limitError{503, fmt.Sprintf("busy: too many invoices asked for on this instance; try again in %s", wait(l.all, now))}
	}
	return nil
}

// sweep forgets clients whose bucket is full again: they are as if new.
func (l *limiter) sweep(now time.Time) {
	for k, c := range l.clients {
		if c.TokensAt(now) >= float64(l.clientBurst) {
			delete(l.clients, k)
		}
	}
}

// wait is how long until lim has a token again, in whole seconds.
func wait(lim *rate.Limiter, now time.Time) time.Duration {
	missing := 1 - lim.TokensAt(now)
	if missing <= 0 || lim.Limit() <= 0 {
		return time.Second
	}
	return max(time.Second, (time.Duration(missing / float64(lim.Limit()) * float64(time.Second))).Round(time.Second))
}
