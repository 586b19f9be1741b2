package link

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/enclaved/enclaved/internal/backoff"
)

// Keeper keeps the enclave's session with its parent up: it dials, runs
// the hello exchange, and dials again after any failure (a dropped
// connection, a protocol violation) with backoff.
type Keeper struct {
	// Dial reaches the parent: vsock CID 3 in production, a unix socket or
	// TCP in dev (linknet.DialAddr).
	Dial    func(ctx context.Context) (net.Conn, error)
	Handler Handler
	Log     *slog.Logger
	// Limits bounds each session's streams (zero: DefaultLimits).
	Limits Limits

	mu    sync.Mutex
	cur   *Session
	ready chan struct{}  // closed when cur is set
	past  [2][256]uint64 // streams opened in ended sessions (Counts)
}

// Run keeps a session up until ctx ends.
func (k *Keeper) Run(ctx context.Context) error {
	log := k.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	wait := 100 * time.Millisecond
	for ctx.Err() == nil {
		s, err := k.connect(ctx)
		if err == nil {
			wait = 100 * time.Millisecond
			k.set(s)
			select {
			case <-ctx.Done():
				s.Close()
				return ctx.Err()
			case <-s.Done():
				k.set(nil)
				err = s.Err()
			}
		}
		log.Warn("parent link down; dialing again", "err", err, "after", wait)
		if err := backoff.Sleep(ctx, wait); err != nil {
			return err
		}
		wait = min(2*wait, 5*time.Second)
	}
	return ctx.Err()
}

func (k *Keeper) connect(ctx context.Context) (*Session, error) {
	dctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	conn, err := k.Dial(dctx)
	if err != nil {
		return nil, err
	}
	return NewSessionLimits(conn, Enclave, k.Handler, k.Limits)
}

func (k *Keeper) set(s *Session) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.ready == nil {
		k.ready = make(chan struct{})
	}
	if k.cur != nil && s == nil {
		for svc := range 256 {
			c := k.cur.Counts(Service(svc))
			k.past[0][svc] += c.Opened[0]
			k.past[1][svc] += c.Opened[1]
		}
	}
	k.cur = s
	if s != nil {
		close(k.ready)
	} else {
		k.ready = make(chan struct{})
	}
}

// Session returns the live session, waiting for one until ctx ends.
func (k *Keeper) Session(ctx context.Context) (*Session, error) {
	for {
		k.mu.Lock()
		if k.ready == nil {
			k.ready = make(chan struct{})
		}
		s, ready := k.cur, k.ready
		k.mu.Unlock()
		if s != nil && s.Err() == nil {
			return s, nil
		}
		if s != nil { // ended; Run is about to replace it
			ready = nil
		}
		select {
		case <-time.After(10 * time.Millisecond):
		case <-ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Open opens a stream on the live session.
func (k *Keeper) Open(ctx context.Context, svc Service, arg string) (*Stream, error) {
	s, err := k.Session(ctx)
	if err != nil {
		return nil, err
	}
	return s.Open(ctx, svc, arg)
}
