package bot

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"
	"github.com/nbd-wtf/go-nostr/nip04"
	"github.com/nbd-wtf/go-nostr/nip44"
	"github.com/nbd-wtf/go-nostr/nip59"

	"github.com/enclaved/enclaved/images"
	"github.com/enclaved/enclaved/internal/testenv"
)

// A sender flooding its lane (its first command held) gets at most
// maxPerSender commands queued: the rest are refused at once, never take
// the slots the others need, and another sender's command still runs.
func TestFloodingSenderHoldsUpNoOtherSender(t *testing.T) {
	ctx := context.Background()
	l := newLanes(8, 4)
	held, release := make(chan struct{}), make(chan struct{})
	defer close(release)
	if l.push(ctx, "flood", func() { close(held); <-release }) != laneQueued {
		t.Fatal("the first command was not queued")
	}
	<-held
	queued, full := 0, 0
	for range 1000 {
		switch l.push(ctx, "flood", func() {}) {
		case laneQueued:
			queued++
		case laneFull:
			full++
		default:
			t.Fatal("a push stopped")
		}
	}
	if queued != 4 || full != 996 {
		t.Errorf("flood: %d queued, %d refused; want 4 and 996", queued, full)
	}
	ran := make(chan struct{})
	if l.push(ctx, "other", func() { close(ran) }) != laneQueued {
		t.Fatal("another sender's command was not queued")
	}
	<-ran
}

// Lanes run one sender's commands in the order pushed, one at a time, and
// a sender whose command does not return holds up no other sender.
func TestLanesOrderPerSenderOnly(t *testing.T) {
	ctx := context.Background()
	l := newLanes(64, 64)
	var mu sync.Mutex
	got := map[string][]int{}
	running := map[string]bool{}
	record := func(sender string, i int) func() {
		return func() {
			mu.Lock()
			if running[sender] {
				t.Errorf("two commands of %s ran at once", sender)
			}
			running[sender] = true
			got[sender] = append(got[sender], i)
			mu.Unlock()
			mu.Lock()
			running[sender] = false
			mu.Unlock()
		}
	}
	held, release := make(chan struct{}), make(chan struct{})
	l.push(ctx, "slow", func() { close(held); <-release })
	<-held
	for i := range 20 {
		l.push(ctx, "slow", record("slow", i))
	}
	var others sync.WaitGroup
	for i := range 20 {
		for _, s := range []string{"a", "b", "c"} {
			others.Add(1)
			l.push(ctx, s, func() { record(s, i)(); others.Done() })
		}
	}
	others.Wait() // while "slow" is still held
	mu.Lock()
	if n := len(got["slow"]); n != 0 {
		t.Errorf("%d commands of the held sender ran before its first returned", n)
	}
	mu.Unlock()
	close(release)
	l.wait()
	for _, s := range []string{"slow", "a", "b", "c"} {
		if len(got[s]) != 20 {
			t.Fatalf("%s: %d commands ran, want 20", s, len(got[s]))
		}
		for i, v := range got[s] {
			if v != i {
				t.Fatalf("%s ran in the order %v", s, got[s])
			}
		}
	}
}

// runBot runs bt until the test ends.
func runBot(t *testing.T, bt *Bot) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { bt.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// One sender's commands are answered in the order they reach the bot,
// though it decodes many events at once: by NIP-17 (the sender is known
// only once decrypted) and by NIP-04, mixed with other senders' commands.
// The order is read where the bot's replies are stored, as the relay takes
// them (a go-nostr subscription may reorder events that arrive together).
func TestRepliesInTheOrderReceived(t *testing.T) {
	relay := testenv.Relay(t)
	var mu sync.Mutex
	var stored []*nostr.Event
	relay.Khatru.OnEventSaved = append(relay.Khatru.OnEventSaved, func(_ context.Context, evt *nostr.Event) {
		mu.Lock()
		stored = append(stored, evt)
		mu.Unlock()
	})
	bt, _ := newBot(t, relay.URL)
	ctx, cancel := context.WithCancel(context.Background())
	in := make(chan incoming)
	done := make(chan struct{})
	go func() { bt.serve(ctx, in); close(done) }()
	defer func() { cancel(); <-done }()
	const n = 40
	var clients []*testenv.Client
	var evts [][]nostr.Event
	for _, ch := range []string{"nip17", "nip04", "nip17"} {
		c := testenv.NewClient(t, relay.URL)
		var es []nostr.Event
		for i := range n {
			text := fmt.Sprintf("status c%d", i)
			if ch == "nip04" {
				es = append(es, c.NIP04(t, bt.self, text))
			} else {
				e, _ := c.NIP17(t, bt.self, text)
				es = append(es, e)
			}
		}
		clients, evts = append(clients, c), append(evts, es)
	}
	for i := range n {
		for _, es := range evts {
			in <- incoming{evt: &es[i]}
		}
	}
	for _, c := range clients {
		for range n {
			c.AwaitFunc(t, "a reply", func(r testenv.Reply) bool { return r.From == bt.self })
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for k, c := range clients {
		i := 0
		for _, evt := range stored {
			if evt.PubKey == c.PK || evt.Tags.FindWithValue("p", c.PK) == nil {
				continue
			}
			text := readReply(t, c.SK, evt)
			if want := fmt.Sprintf("no container c%d here.", i); text != want {
				t.Fatalf("sender %d: reply %d is %q, want %q", k, i, text, want)
			}
			i++
		}
		if i != n {
			t.Errorf("sender %d: %d replies stored, want %d", k, i, n)
		}
	}
}

// readReply decrypts a reply (a gift wrap or a NIP-04 DM) with the
// recipient's secret key sk.
func readReply(t *testing.T, sk string, evt *nostr.Event) string {
	t.Helper()
	if evt.Kind == nostr.KindEncryptedDirectMessage {
		ss, err := nip04.ComputeSharedSecret(evt.PubKey, sk)
		if err != nil {
			t.Fatal(err)
		}
		text, err := nip04.Decrypt(evt.Content, ss)
		if err != nil {
			t.Fatal(err)
		}
		return text
	}
	rumor, err := nip59.GiftUnwrap(*evt, func(pub, ct string) (string, error) {
		ck, err := nip44.GenerateConversationKey(pub, sk)
		if err != nil {
			return "", err
		}
		return nip44.Decrypt(ct, ck)
	})
	if err != nil {
		t.Fatal(err)
	}
	return rumor.Content
}

// A command that waits (a deploy whose registry does not answer) holds up
// its own sender's later commands only: others are answered meanwhile,
// and the sender's next command is answered after the deploy.
func TestSlowCommandHoldsUpItsSenderOnly(t *testing.T) {
	relay := testenv.Relay(t)
	reg := testenv.NewGatedRegistry(t)
	img := reg.PushUnique(t, "slow")
	bt, _ := newBot(t, relay.URL)
	bt.q.Images = &images.Resolver{}
	runBot(t, bt)
	slow, other := testenv.NewClient(t, relay.URL), testenv.NewClient(t, relay.URL)

	reg.Hold()
	deploy := slow.Send(t, "nip17", bt.self, "deploy "+img.Ref)
	<-reg.Waiting() // the deploy is at the registry
	later := slow.Send(t, "nip17", bt.self, "status mine")
	for i := range 5 {
		r := other.Ask(t, "nip17", bt.self, fmt.Sprintf("status x%d", i))
		if !strings.Contains(r.Text, "no container") {
			t.Fatalf("other sender got %q", r.Text)
		}
	}
	select {
	case r := <-slow.Replies():
		t.Fatalf("the slow sender got %q before its deploy was answered", r.Text)
	default:
	}
	reg.Release()
	first := slow.AwaitFunc(t, "a reply", func(r testenv.Reply) bool { return r.From == bt.self })
	second := slow.AwaitFunc(t, "a reply", func(r testenv.Reply) bool { return r.From == bt.self })
	if !first.RefersTo(deploy) || !second.RefersTo(later) {
		t.Errorf("replies in the wrong order: %q, then %q", first.Text, second.Text)
	}
}

// Every copy of a command (the same gift wrap three times, as from
// several relays, the same rumor in a second wrap, the same NIP-04 DM
// twice), however the copies interleave, gets one reply, though copies
// are decoded at once.
func TestOneReplyPerCommandAcrossCopies(t *testing.T) {
	relay := testenv.Relay(t)
	bt, _ := newBot(t, relay.URL)
	c := testenv.NewClient(t, relay.URL)
	ctx, cancel := context.WithCancel(context.Background())
	in := make(chan incoming)
	done := make(chan struct{})
	go func() { bt.serve(ctx, in); close(done) }()
	defer func() { cancel(); <-done }()

	ck, err := nip44.GenerateConversationKey(bt.self, c.SK)
	if err != nil {
		t.Fatal(err)
	}
	wrap := func(rumor nostr.Event) nostr.Event {
		w, err := nip59.GiftWrap(rumor, bt.self, func(s string) (string, error) { return nip44.Encrypt(s, ck) },
			func(e *nostr.Event) error { return e.Sign(c.SK) }, nil)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	var ids []string
	for i := range 10 {
		rumor := nostr.Event{Kind: nostr.KindDirectMessage, PubKey: c.PK, CreatedAt: nostr.Now(),
			Content: fmt.Sprintf("status w%d", i), Tags: nostr.Tags{{"p", bt.self}}}
		rumor.ID = rumor.GetID()
		w1, w2 := wrap(rumor), wrap(rumor)
		dm := c.NIP04(t, bt.self, fmt.Sprintf("status d%d", i))
		for _, e := range []nostr.Event{w1, dm, w1, w2, dm, w1, w2} {
			in <- incoming{evt: &e}
		}
		ids = append(ids, rumor.ID, dm.ID)
	}
	// One sender's commands are answered in order: once the last one is
	// answered, every copy before it has been dealt with.
	last := c.NIP04(t, bt.self, "status last")
	in <- incoming{evt: &last}
	got := map[string]int{}
	for {
		r := c.AwaitFunc(t, "a reply", func(r testenv.Reply) bool { return r.From == bt.self })
		if r.RefersTo(last.ID) {
			break
		}
		for _, id := range ids {
			if r.RefersTo(id) {
				got[id]++
			}
		}
	}
	for _, id := range ids {
		if got[id] != 1 {
			t.Errorf("%d replies to %s, want 1", got[id], id)
		}
	}
}

// A relay that never acknowledges (a renter's DM relay, say) holds up the
// replies published to it, not the others': however many publications
// hang, other senders are answered.
func TestSilentRelayHoldsUpNoOtherSender(t *testing.T) {
	relay, silent := testenv.Relay(t), testenv.Relay(t)
	held, gate := make(chan struct{}, 64), make(chan struct{})
	silent.Khatru.RejectEvent = append(silent.Khatru.RejectEvent, func(ctx context.Context, evt *nostr.Event) (bool, string) {
		if evt.Kind == nostr.KindGiftWrap {
			held <- struct{}{}
			select {
			case <-gate:
			case <-ctx.Done():
			}
		}
		return false, ""
	})
	t.Cleanup(func() { close(gate) })
	bt, _ := newBot(t, relay.URL)
	bt.publishTimeout = time.Hour // a publication never gives up here
	runBot(t, bt)
	n := 10
	for range n {
		c := testenv.NewClient(t, relay.URL)
		list := nostr.Event{Kind: nostr.KindDMRelayList, CreatedAt: nostr.Now(), Tags: nostr.Tags{{"relay", silent.URL}}}
		list.Sign(c.SK)
		c.Publish(t, list, relay.URL)
		c.Send(t, "nip17", bt.self, "status")
	}
	timeout := time.After(time.Minute)
	for i := range n {
		select {
		case <-held:
		case <-timeout:
			t.Fatalf("%d of %d replies reached the silent relay", i, n)
		}
	}
	other := testenv.NewClient(t, relay.URL)
	if r := other.Ask(t, "nip17", bt.self, "status"); !strings.Contains(r.Text, "no containers") {
		t.Errorf("another sender got %q", r.Text)
	}
}
