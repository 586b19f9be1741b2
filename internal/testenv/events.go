package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"
)

// Subscribe opens a subscription on relay (go-nostr directly) for the rest
// of the test and returns its events, stored ones first, then live ones.
func Subscribe(tb testing.TB, relay string, filters ...nostr.Filter) <-chan *nostr.Event {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	rl, err := nostr.RelayConnect(ctx, relay)
	if err != nil {
		tb.Fatalf("connect %s: %v", relay, err)
	}
	tb.Cleanup(func() { rl.Close() })
	sub, err := rl.Subscribe(ctx, filters)
	if err != nil {
		tb.Fatalf("subscribe on %s: %v", relay, err)
	}
	return sub.Events
}

// Next returns the next event from events, or fails the test after a
// minute naming what it waited for.
func Next(tb testing.TB, events <-chan *nostr.Event, what string) *nostr.Event {
	tb.Helper()
	select {
	case evt, ok := <-events:
		if !ok {
			tb.Fatalf("the subscription for %s closed", what)
		}
		return evt
	case <-time.After(time.Minute):
		tb.Fatalf("no %s within a minute", what)
	}
	return nil
}

// Query returns the events stored on relay that match filter.
func Query(tb testing.TB, relay string, filter nostr.Filter) []*nostr.Event {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rl, err := nostr.RelayConnect(ctx, relay)
	if err != nil {
		tb.Fatalf("connect %s: %v", relay, err)
	}
	defer rl.Close()
	evts, err := rl.QuerySync(ctx, filter)
	if err != nil {
		tb.Fatalf("query %s: %v", relay, err)
	}
	return evts
}
