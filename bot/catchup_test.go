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

// Relays answer a query with a page of the newest events (500 here), and
// gift wraps are back-dated at random: a DM older than a page of newer
// ones, all stored while the instance was down, is still answered, as the
// bot walks its whole lookback back a page at a time.
func TestDMOlderThanAPageIsAnswered(t *testing.T) {
	relay := testenv.Relay(t)
	ctx := context.Background()
	bt, _ := newBot(t, relay.URL)
	c := testenv.NewClient(t, relay.URL)
	old := c.NIP04(t, bt.self, "status")
	old.CreatedAt = nostr.Now() - 3600
	old.Sign(c.SK)
	if err := relay.Store.SaveEvent(ctx, &old); err != nil {
		t.Fatal(err)
	}
	// A page and more of newer DMs to the bot (unreadable: dropped).
	for i := range 600 {
		filler := nostr.Event{Kind: nostr.KindEncryptedDirectMessage, CreatedAt: nostr.Now() - nostr.Timestamp(1800-i),
			Content: "not for anyone?iv=AAAAAAAAAAAAAAAAAAAAAA==", Tags: nostr.Tags{{"p", bt.self}}}
		filler.Sign(nostr.GeneratePrivateKey())
		if err := relay.Store.SaveEvent(ctx, &filler); err != nil {
			t.Fatal(err)
		}
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { bt.Run(rctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	c.AwaitFunc(t, "the answer to a DM older than a page", func(r testenv.Reply) bool { return r.RefersTo(old.ID) })
}

// A hostile relay can send anything under a real event's id. Such a
// forgery, seen first, must not get the id remembered: the real DM that
// follows (from an honest relay) is still answered.
func TestForgedCopyDoesNotHideTheRealDM(t *testing.T) {
	relay := testenv.Relay(t)
	ctx := context.Background()
	bt, _ := newBot(t, relay.URL)
	c := testenv.NewClient(t, relay.URL)
	dm := c.NIP04(t, bt.self, "status")
	forged := dm
	forged.Content = "forged?iv=AAAAAAAAAAAAAAAAAAAAAA=="
	bt.Handle(ctx, &forged) // as a hostile relay would deliver it
	badSig := dm
	badSig.Sig = dm.Sig[:len(dm.Sig)-2] + "00"
	bt.Handle(ctx, &badSig)

	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { bt.Run(rctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	c.Publish(t, dm, relay.URL)
	c.AwaitFunc(t, "the answer to the real DM", func(r testenv.Reply) bool { return r.RefersTo(dm.ID) })
}
