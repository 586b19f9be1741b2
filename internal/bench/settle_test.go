package bench

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/billing"
	"github.com/enclaved/enclaved/internal/testenv"
)

// settlements notes when each invoice of the operator's node settles, as a
// subscriber of the node's settlement stream learns it: the moment the
// instance's own stream does. (The payer's Pay returns later than that:
// by then a zap receipt is often out already.)
type settlements struct {
	// The mutex protects the following elements.
	mu      sync.Mutex
	at      map[string]time.Time // payment hash → when its settlement arrived
	changed chan struct{}        // closed and replaced at each arrival
}

// watchSettlements subscribes to the operator's settlements until the test
// ends.
func watchSettlements(t testing.TB) *settlements {
	t.Helper()
	c := testenv.InvoiceClient(t, testenv.Lightning(t).Operator)
	s := &settlements{at: map[string]time.Time{}, changed: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		c.SubscribeSettlements(ctx, "", func(st billing.Settlement) error {
			now := time.Now()
			s.mu.Lock()
			defer s.mu.Unlock()
			if _, ok := s.at[st.PaymentHash]; !ok {
				s.at[st.PaymentHash] = now
			}
			close(s.changed)
			s.changed = make(chan struct{})
			return nil
		})
	}()
	return s
}

// of returns when the invoice with payment hash (hex) settled, waiting for
// the stream at most a minute.
func (s *settlements) of(t testing.TB, hash string) time.Time {
	t.Helper()
	timeout := time.After(time.Minute)
	for {
		s.mu.Lock()
		at, ok := s.at[hash]
		changed := s.changed
		s.mu.Unlock()
		if ok {
			return at
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("the settlement of %s did not arrive within a minute", hash)
		}
	}
}

// stamped is an event and when it arrived.
type stamped struct {
	evt *nostr.Event
	at  time.Time
}

// subscribeStamped is testenv.Subscribe noting each event's arrival time
// as it arrives, not when it is read.
func subscribeStamped(t testing.TB, relay string, filter nostr.Filter) <-chan stamped {
	t.Helper()
	events := testenv.Subscribe(t, relay, filter)
	out := make(chan stamped, 1000)
	go func() {
		for evt := range events {
			out <- stamped{evt, time.Now()}
		}
	}()
	return out
}
