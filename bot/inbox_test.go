package bot

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/internal/testenv"
)

// Many new senders at once are looked up in a few batched queries, and
// each gets its own DM relays (or none, if it published none).
func TestInboxLookupsBatched(t *testing.T) {
	relay := testenv.Relay(t)
	bt, _ := newBot(t, relay.URL)
	var queries atomic.Int64
	gate := make(chan struct{})
	query := relay.Khatru.QueryEvents[0]
	relay.Khatru.QueryEvents[0] = func(ctx context.Context, f nostr.Filter) (chan *nostr.Event, error) {
		if slices.Contains(f.Kinds, nostr.KindDMRelayList) {
			queries.Add(1)
			<-gate
		}
		return query(ctx, f)
	}
	const n = 30
	want := map[string]string{}
	var pks []string
	for i := range n {
		sk := nostr.GeneratePrivateKey()
		pk, _ := nostr.GetPublicKey(sk)
		pks = append(pks, pk)
		if i%2 == 0 {
			continue // publishes no list
		}
		url := fmt.Sprintf("ws://127.0.0.1:%d", 10000+i)
		want[pk] = url
		list := nostr.Event{Kind: nostr.KindDMRelayList, CreatedAt: nostr.Now(), Tags: nostr.Tags{{"relay", url}}}
		list.Sign(sk)
		if err := relay.Store.SaveEvent(context.Background(), &list); err != nil {
			t.Fatal(err)
		}
	}
	var entries []*inboxEntry
	for _, pk := range pks {
		entries = append(entries, bt.inboxLookup(pk))
	}
	close(gate)
	for i, e := range entries {
		<-e.ready
		got := ""
		if len(e.relays) > 0 {
			got = e.relays[0]
		}
		if len(e.relays) > 1 || got != want[pks[i]] {
			t.Errorf("sender %d: DM relays %q, want %q", i, e.relays, want[pks[i]])
		}
	}
	if q := queries.Load(); q > maxLookups {
		t.Errorf("%d queries for %d senders, want at most %d", q, n, maxLookups)
	}
	// Cached: no query more.
	before := queries.Load()
	if e := bt.inboxLookup(pks[1]); e != entries[1] || queries.Load() != before {
		t.Error("a fresh entry was looked up again")
	}
}
