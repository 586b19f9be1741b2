package testenv

import (
	"context"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"
	"github.com/nbd-wtf/go-nostr/nip04"
	"github.com/nbd-wtf/go-nostr/nip19"
	"github.com/nbd-wtf/go-nostr/nip44"
	"github.com/nbd-wtf/go-nostr/nip59"
)

// Client is a renter's Nostr client written with go-nostr alone (none of
// enclaved's protocol code), so tests check the bot against an
// independent implementation. It listens on its relays for everything
// addressed to it from the moment it is created.
type Client struct {
	SK, PK string
	Relays []string

	pool    *nostr.SimplePool
	replies chan Reply

	// The mutex protects the following elements.
	mu   sync.Mutex
	seen map[string]bool
	last nostr.Timestamp // created_at of the last message made
}

// stamp is the created_at of a new message: now, but always after the
// last one. Two messages with one text in one second would otherwise be
// the same event (NIP-17: the same rumor), which the bot rightly answers
// once; a person does not type that fast, a test does.
func (c *Client) stamp() nostr.Timestamp {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.last = max(nostr.Now(), c.last+1)
	return c.last
}

// Reply is a message the client received, decrypted.
type Reply struct {
	Channel string // nip17, nip04 or mention
	From    string
	Text    string
	Event   nostr.Event // the rumor for NIP-17
}

// RefersTo says whether the reply's e tags name id.
func (r Reply) RefersTo(id string) bool {
	for _, t := range r.Event.Tags {
		if len(t) >= 2 && t[0] == "e" && t[1] == id {
			return true
		}
	}
	return false
}

// NewClient starts a client with a fresh key on relays, stopped when the
// test ends. It returns once every relay has sent what it stored.
func NewClient(tb testing.TB, relays ...string) *Client {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	sk := nostr.GeneratePrivateKey()
	pk, _ := nostr.GetPublicKey(sk)
	c := &Client{SK: sk, PK: pk, Relays: relays, pool: nostr.NewSimplePool(ctx), replies: make(chan Reply, 1000), seen: map[string]bool{}}
	var wg sync.WaitGroup
	tb.Cleanup(func() { cancel(); c.pool.Close("test over"); wg.Wait() })
	ready := make(chan struct{}, len(relays))
	for _, url := range relays {
		wg.Go(func() { c.listen(ctx, tb, url, ready) })
	}
	timeout := time.After(10 * time.Second)
	for range relays {
		select {
		case <-ready:
		case <-timeout:
			tb.Fatal("client: no EOSE from the relays")
		}
	}
	return c
}

// listen keeps a subscription to everything addressed to the client open
// on one relay. Unlike go-nostr's pool, which resubscribes from "now"
// after a dropped connection, it always asks for the last 49 h: NIP-17
// gift wraps are back-dated and would be missed. Once the stored events
// are in it asks once more, as a relay may have stored an event between
// answering from storage and starting to listen.
func (c *Client) listen(ctx context.Context, tb testing.TB, url string, ready chan<- struct{}) {
	filter := nostr.Filter{
		Kinds: []int{nostr.KindGiftWrap, nostr.KindEncryptedDirectMessage, nostr.KindTextNote},
		Tags:  nostr.TagMap{"p": {c.PK}},
	}
	first := true
	for ctx.Err() == nil {
		since := nostr.Timestamp(time.Now().Add(-49 * time.Hour).Unix())
		filter.Since = &since
		r, err := c.pool.EnsureRelay(url)
		if err == nil {
			var sub *nostr.Subscription
			if sub, err = r.Subscribe(ctx, nostr.Filters{filter}); err == nil {
				go func(signal bool) {
					select {
					case <-sub.EndOfStoredEvents:
					case <-sub.Context.Done():
						return
					}
					if evts, err := r.QueryEvents(ctx, filter); err == nil {
						for evt := range evts {
							c.deliver(ctx, evt)
						}
					}
					if signal {
						ready <- struct{}{}
					}
				}(first)
				first = false
				for evt := range sub.Events {
					c.deliver(ctx, evt)
				}
			}
		}
		if ctx.Err() != nil {
			return
		}
		tb.Logf("client: subscription to %s ended (%v); subscribing again", url, err)
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// deliver passes a new event addressed to the client on as a reply.
func (c *Client) deliver(ctx context.Context, evt *nostr.Event) {
	if r, ok := c.decode(evt); ok {
		select {
		case c.replies <- r:
		case <-ctx.Done():
		}
	}
}

func (c *Client) decode(evt *nostr.Event) (Reply, bool) {
	c.mu.Lock()
	dup := c.seen[evt.ID]
	c.seen[evt.ID] = true
	c.mu.Unlock()
	if dup {
		return Reply{}, false
	}
	switch evt.Kind {
	case nostr.KindGiftWrap:
		rumor, err := nip59.GiftUnwrap(*evt, func(other, ct string) (string, error) {
			ck, err := nip44.GenerateConversationKey(other, c.SK)
			if err != nil {
				return "", err
			}
			return nip44.Decrypt(ct, ck)
		})
		if err != nil || rumor.Kind != nostr.KindDirectMessage {
			return Reply{}, false
		}
		return Reply{Channel: "nip17", From: rumor.PubKey, Text: rumor.Content, Event: rumor}, true
	case nostr.KindEncryptedDirectMessage:
		ss, err := nip04.ComputeSharedSecret(evt.PubKey, c.SK)
		if err != nil {
			return Reply{}, false
		}
		text, err := nip04.Decrypt(evt.Content, ss)
		if err != nil {
			return Reply{}, false
		}
		return Reply{Channel: "nip04", From: evt.PubKey, Text: text, Event: *evt}, true
	default:
		return Reply{Channel: "mention", From: evt.PubKey, Text: evt.Content, Event: *evt}, true
	}
}

// NIP17 returns a gift-wrapped DM to pubkey and the rumor's id.
func (c *Client) NIP17(tb testing.TB, to, text string) (nostr.Event, string) {
	tb.Helper()
	rumor := nostr.Event{Kind: nostr.KindDirectMessage, PubKey: c.PK, CreatedAt: c.stamp(), Content: text,
		Tags: nostr.Tags{{"p", to}}}
	rumor.ID = rumor.GetID()
	ck, err := nip44.GenerateConversationKey(to, c.SK)
	if err != nil {
		tb.Fatal(err)
	}
	wrap, err := nip59.GiftWrap(rumor, to, func(s string) (string, error) { return nip44.Encrypt(s, ck) },
		func(e *nostr.Event) error { return e.Sign(c.SK) }, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return wrap, rumor.ID
}

// NIP04 returns a kind-4 DM to pubkey.
func (c *Client) NIP04(tb testing.TB, to, text string) nostr.Event {
	tb.Helper()
	ss, err := nip04.ComputeSharedSecret(to, c.SK)
	if err != nil {
		tb.Fatal(err)
	}
	ct, err := nip04.Encrypt(text, ss)
	if err != nil {
		tb.Fatal(err)
	}
	evt := nostr.Event{Kind: nostr.KindEncryptedDirectMessage, CreatedAt: c.stamp(), Content: ct, Tags: nostr.Tags{{"p", to}}}
	evt.Sign(c.SK)
	return evt
}

// Mention returns a kind-1 note that mentions pubkey.
func (c *Client) Mention(tb testing.TB, to, text string) nostr.Event {
	tb.Helper()
	npub, _ := nip19.EncodePublicKey(to)
	evt := nostr.Event{Kind: nostr.KindTextNote, CreatedAt: c.stamp(), Content: "nostr:" + npub + " " + text, Tags: nostr.Tags{{"p", to}}}
	evt.Sign(c.SK)
	return evt
}

// Send sends text to pubkey on channel (nip17, nip04 or mention) through
// every relay of the client and returns the id replies will refer to.
func (c *Client) Send(tb testing.TB, channel, to, text string) string {
	tb.Helper()
	var evt nostr.Event
	id := ""
	switch channel {
	case "nip17":
		evt, id = c.NIP17(tb, to, text)
	case "nip04":
		evt = c.NIP04(tb, to, text)
		id = evt.ID
	case "mention":
		evt = c.Mention(tb, to, text)
		id = evt.ID
	default:
		tb.Fatalf("unknown channel %q", channel)
	}
	c.Publish(tb, evt, c.Relays...)
	return id
}

// Ask sends text like Send and returns the reply that refers to it.
func (c *Client) Ask(tb testing.TB, channel, to, text string) Reply {
	tb.Helper()
	id := c.Send(tb, channel, to, text)
	return c.AwaitFunc(tb, "the reply to "+text, func(r Reply) bool { return r.RefersTo(id) })
}

// Publish sends evt to the given relays and fails the test if one refuses.
func (c *Client) Publish(tb testing.TB, evt nostr.Event, relays ...string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for res := range c.pool.PublishMany(ctx, relays, evt) {
		if res.Error != nil {
			tb.Fatalf("publish to %s: %v", res.RelayURL, res.Error)
		}
	}
}

// Replies is the channel of replies not yet taken by Await.
func (c *Client) Replies() <-chan Reply { return c.replies }

// Await returns the first reply (from the instance's pubkey from) whose
// text contains want, skipping others, or fails the test after a minute.
func (c *Client) Await(tb testing.TB, from, want string) Reply {
	tb.Helper()
	return c.AwaitFunc(tb, "a reply containing "+want, func(r Reply) bool { return r.From == from && strings.Contains(r.Text, want) })
}

// AwaitFunc returns the first reply for which match is true.
func (c *Client) AwaitFunc(tb testing.TB, what string, match func(Reply) bool) Reply {
	tb.Helper()
	timeout := time.After(time.Minute)
	var skipped []string
	for {
		select {
		case r := <-c.replies:
			if match(r) {
				return r
			}
			skipped = append(skipped, r.Channel+": "+r.Text)
		case <-timeout:
			tb.Fatalf("no %s within a minute; got instead:\n%s", what, strings.Join(skipped, "\n---\n"))
		}
	}
}

var bolt11RE = regexp.MustCompile(`lnbcrt[0-9a-z]+`)

// Invoice returns the regtest BOLT-11 invoice in text, or fails the test.
func Invoice(tb testing.TB, text string) string {
	tb.Helper()
	inv := bolt11RE.FindString(text)
	if inv == "" {
		tb.Fatalf("no invoice in %q", text)
	}
	return inv
}
