package bot

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/internal/testenv"
)

// A DM stored by the relay while it answers the bot's subscription from
// storage, before it starts listening for it, reaches the subscription
// neither way (khatru queries, then adds the listener). The bot asks again
// once its stored events are in, and answers it.
func TestDMStoredDuringSubscribeIsAnswered(t *testing.T) {
	relay := testenv.Relay(t)
	ctx := context.Background()
	bt, _ := newBot(t, relay.URL)
	c := testenv.NewClient(t, relay.URL)
	dm, id := c.NIP17(t, bt.self, "status")

	// The race, made certain: the first query for the bot's gift wraps
	// takes its snapshot, then the DM is stored without being broadcast
	// (as if it arrived before the listener was added).
	var once sync.Once
	query := relay.Khatru.QueryEvents[0]
	relay.Khatru.QueryEvents[0] = func(ctx context.Context, f nostr.Filter) (chan *nostr.Event, error) {
		ch, err := query(ctx, f)
		if err != nil || !slices.Contains(f.Kinds, nostr.KindGiftWrap) || !slices.Contains(f.Tags["p"], bt.self) {
			return ch, err
		}
		var snapshot []*nostr.Event
		for evt := range ch {
			snapshot = append(snapshot, evt)
		}
		once.Do(func() { relay.Store.SaveEvent(ctx, &dm) })
		out := make(chan *nostr.Event, len(snapshot))
		for _, evt := range snapshot {
			out <- evt
		}
		close(out)
		return out, nil
	}

	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { bt.Run(rctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	r := c.AwaitFunc(t, "the answer to the DM stored during the subscribe", func(r testenv.Reply) bool { return r.RefersTo(id) })
	if r.Channel != "nip17" {
		t.Errorf("answered on %s", r.Channel)
	}
}
