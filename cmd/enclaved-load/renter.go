package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nbd-wtf/go-nostr"
	"github.com/nbd-wtf/go-nostr/nip44"
	"github.com/nbd-wtf/go-nostr/nip59"
)

// renter is one Nostr user with its own key and its own connection to each
// relay, listening for gift wraps addressed to it.
type renter struct {
	sk, pk   string
	instance string
	relays   []*nostr.Relay
	// toInstance is the NIP-44 conversation key with the instance, for the
	// seal of each message and of each reply.
	toInstance [32]byte

	// The mutex protects the following elements.
	mu      sync.Mutex
	last    nostr.Timestamp           // created_at of the last rumor made
	pending map[string]chan time.Time // rumor id → where its reply's arrival goes
	seen    map[string]bool           // wrap ids received (several relays)
	texts   map[string]string         // rumor id → the reply's text, once arrived
}

// newRenter makes a renter with a fresh key, connects it to every relay and
// subscribes to what is addressed to it; it returns once every relay has
// sent what it stored.
func newRenter(ctx context.Context, urls []string, instance string) (*renter, error) {
	sk := nostr.GeneratePrivateKey()
	pk, _ := nostr.GetPublicKey(sk)
	ck, err := nip44.GenerateConversationKey(instance, sk)
	if err != nil {
		return nil, err
	}
	r := &renter{sk: sk, pk: pk, instance: instance, toInstance: ck,
		pending: map[string]chan time.Time{}, seen: map[string]bool{}, texts: map[string]string{}}
	for _, url := range urls {
		rl, err := nostr.RelayConnect(ctx, url)
		if err != nil {
			r.close()
			return nil, fmt.Errorf("connect %s: %w", url, err)
		}
		r.relays = append(r.relays, rl)
		// Gift wraps are back-dated up to two days: ask for that much.
		since := nostr.Timestamp(time.Now().Add(-49 * time.Hour).Unix())
		sub, err := rl.Subscribe(ctx, nostr.Filters{{Kinds: []int{nostr.KindGiftWrap}, Tags: nostr.TagMap{"p": {pk}}, Since: &since}})
		if err != nil {
			r.close()
			return nil, fmt.Errorf("subscribe %s: %w", url, err)
		}
		select {
		case <-sub.EndOfStoredEvents:
		case <-ctx.Done():
			r.close()
			return nil, ctx.Err()
		}
		go func() {
			for evt := range sub.Events {
				r.receive(evt, time.Now())
			}
		}()
	}
	return r, nil
}

func (r *renter) close() {
	for _, rl := range r.relays {
		rl.Close()
	}
}

// stamp is the created_at of a new rumor: now, but always after the last
// one, so that two equal commands in one second are two messages (an equal
// rumor is the same message, which the instance rightly answers once).
func (r *renter) stamp() nostr.Timestamp {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.last = max(nostr.Now(), r.last+1)
	return r.last
}

// wrap builds a NIP-17 DM (a kind-14 rumor, sealed and gift-wrapped) with
// text to the instance and returns it with the rumor's id, which the
// reply's e tag names.
func (r *renter) wrap(text string) (nostr.Event, string, error) {
	rumor := nostr.Event{Kind: nostr.KindDirectMessage, PubKey: r.pk, CreatedAt: r.stamp(), Content: text,
		Tags: nostr.Tags{{"p", r.instance}}}
	rumor.ID = rumor.GetID()
	wrap, err := nip59.GiftWrap(rumor, r.instance,
		func(s string) (string, error) { return nip44.Encrypt(s, r.toInstance) },
		func(e *nostr.Event) error { return e.Sign(r.sk) }, nil)
	return wrap, rumor.ID, err
}

// errNoReply is a command whose reply did not come in time.
var errNoReply = errors.New("no reply in time")

// ask sends text and waits at most timeout for the reply. It returns the
// time from the publication (the wrap built, before the relay's OK) to the
// reply's arrival, and the reply's text.
func (r *renter) ask(ctx context.Context, text string, timeout time.Duration) (time.Duration, string, error) {
	wrap, id, err := r.wrap(text)
	if err != nil {
		return 0, "", err
	}
	arrived := make(chan time.Time, 1)
	r.mu.Lock()
	r.pending[id] = arrived
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.pending, id)
		delete(r.texts, id)
		r.mu.Unlock()
	}()
	start := time.Now()
	published := 0
	var perr error
	for _, rl := range r.relays {
		pctx, cancel := context.WithTimeout(ctx, timeout)
		if err := rl.Publish(pctx, wrap); err != nil {
			perr = err
		} else {
			published++
		}
		cancel()
	}
	if published == 0 {
		return 0, "", fmt.Errorf("publish: %w", perr)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case at := <-arrived:
		r.mu.Lock()
		text := r.texts[id]
		r.mu.Unlock()
		return at.Sub(start), text, nil
	case <-t.C:
		return 0, "", errNoReply
	case <-ctx.Done():
		return 0, "", ctx.Err()
	}
}

// receive takes a gift wrap that arrived at at: if it unwraps to a DM from
// the instance answering a pending command, that command's waiter hears of
// it.
func (r *renter) receive(evt *nostr.Event, at time.Time) {
	r.mu.Lock()
	dup := r.seen[evt.ID]
	r.seen[evt.ID] = true
	r.mu.Unlock()
	if dup {
		return
	}
	rumor, err := nip59.GiftUnwrap(*evt, func(other, ct string) (string, error) {
		ck := r.toInstance
		if other != r.instance {
			var err error
			if ck, err = nip44.GenerateConversationKey(other, r.sk); err != nil {
				return "", err
			}
		}
		return nip44.Decrypt(ct, ck)
	})
	if err != nil || rumor.Kind != nostr.KindDirectMessage || rumor.PubKey != r.instance {
		return
	}
	for _, tag := range rumor.Tags {
		if len(tag) < 2 || tag[0] != "e" {
			continue
		}
		r.mu.Lock()
		ch, ok := r.pending[tag[1]]
		if ok {
			delete(r.pending, tag[1])
			r.texts[tag[1]] = rumor.Content
		}
		r.mu.Unlock()
		if ok {
			ch <- at
			return
		}
	}
}

// expected says whether a reply's text is what the command asks for: for
// want "" any reply; else one containing want (case-sensitive), and never
// a rate limit's "slow down".
func expected(text, want string) bool {
	if strings.HasPrefix(text, "slow down") {
		return false
	}
	return want == "" || strings.Contains(text, want)
}
