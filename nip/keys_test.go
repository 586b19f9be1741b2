package nip

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/nbd-wtf/go-nostr"
	"github.com/nbd-wtf/go-nostr/nip44"
	"github.com/nbd-wtf/go-nostr/nip59"
)

// LocalKeys' own key agreement and signatures are go-nostr's: the same
// conversation keys both ways, signatures that go-nostr checks.
func TestLocalKeysAgreeWithGoNostr(t *testing.T) {
	ctx := context.Background()
	for range 20 {
		inst, keys := instance(t)
		peer := newParty(t)
		want, err := nip44.GenerateConversationKey(peer.pk, inst.sk)
		if err != nil {
			t.Fatal(err)
		}
		for _, keep := range []bool{true, true, false} { // computed, cached, uncached
			if got, err := keys.conversationKey(peer.pk, keep); err != nil || got != want {
				t.Fatalf("conversation key %x (%v), go-nostr's %x", got, err, want)
			}
		}
		evt := nostr.Event{Kind: 1, CreatedAt: nostr.Now(), Content: "hello"}
		if err := keys.SignEvent(ctx, &evt); err != nil {
			t.Fatal(err)
		}
		if ok, _ := evt.CheckSignature(); !ok || evt.PubKey != inst.pk || !evt.CheckID() {
			t.Fatalf("signed event does not check: %+v", evt)
		}
	}
	if _, err := NewLocalKeys(strings.Repeat("0", 64)); err == nil {
		t.Error("a zero secret key was accepted")
	}
	if _, err := NewLocalKeys(strings.Repeat("f", 64)); err == nil {
		t.Error("a secret key over the group order was accepted")
	}
	_, keys := instance(t)
	if _, err := keys.conversationKey("zz", true); err == nil {
		t.Error("a bad public key was accepted")
	}
}

// A gift wrap's random key is not cached, and the cache of peers' keys
// stays bounded however many peers write.
func TestConversationKeysBounded(t *testing.T) {
	ctx := context.Background()
	inst, keys := instance(t)
	keys.cks = newCKCache(8)
	alice := newParty(t)
	for i := range 20 {
		wrap := wrapFrom(t, alice, inst.pk, fmt.Sprintf("status %d", i))
		if _, err := Decode(ctx, keys, inst.pk, &wrap); err != nil {
			t.Fatal(err)
		}
	}
	if n := keys.cks.order.Len(); n != 1 {
		t.Errorf("%d conversation keys cached after one sender's wraps, want 1 (its seal's)", n)
	}
	for range 20 {
		p := newParty(t)
		if _, err := keys.Encrypt(ctx, "x", p.pk); err != nil {
			t.Fatal(err)
		}
	}
	if n, m := keys.cks.order.Len(), len(keys.cks.byKey); n != 8 || m != 8 {
		t.Errorf("%d/%d conversation keys cached, want at most 8", n, m)
	}
	if _, ok := keys.cks.get(alice.pk); ok {
		t.Error("the least recently used peer was kept")
	}
}

// A wrap whose seal is not signed by the key it names is refused.
func TestForgedSealRefused(t *testing.T) {
	ctx := context.Background()
	inst, keys := instance(t)
	alice, mallory := newParty(t), newParty(t)
	rumor := nostr.Event{Kind: nostr.KindDirectMessage, PubKey: alice.pk, CreatedAt: nostr.Now(), Content: "delete x",
		Tags: nostr.Tags{{"p", inst.pk}}}
	rumor.ID = rumor.GetID()
	// The rumor is readable as alice's (the conversation key is the
	// instance's with alice), so only the seal's signature tells.
	ck, err := nip44.GenerateConversationKey(alice.pk, inst.sk)
	if err != nil {
		t.Fatal(err)
	}
	wrap, err := nip59.GiftWrap(rumor, inst.pk, func(s string) (string, error) { return nip44.Encrypt(s, ck) },
		func(e *nostr.Event) error {
			if err := mallory.kr.SignEvent(ctx, e); err != nil {
				return err
			}
			e.PubKey = alice.pk // claims alice; signed by mallory
			return nil
		}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if msg, err := Decode(ctx, keys, inst.pk, &wrap); err == nil {
		t.Fatalf("forged seal decoded as from %s", msg.From)
	}
}

func wrapFrom(t *testing.T, from party, to, text string) nostr.Event {
	t.Helper()
	ctx := context.Background()
	rumor := nostr.Event{Kind: nostr.KindDirectMessage, PubKey: from.pk, CreatedAt: nostr.Now(), Content: text,
		Tags: nostr.Tags{{"p", to}}}
	rumor.ID = rumor.GetID()
	wrap, err := nip59.GiftWrap(rumor, to, func(s string) (string, error) { return from.kr.Encrypt(ctx, s, to) },
		func(e *nostr.Event) error { return from.kr.SignEvent(ctx, e) }, nil)
	if err != nil {
		t.Fatal(err)
	}
	return wrap
}

// What the instance wraps, go-nostr unwraps, and its wrap is signed by a
// key of its own, dated in NIP-59's past.
func TestGiftWrapReadByGoNostr(t *testing.T) {
	ctx := context.Background()
	inst, keys := instance(t)
	bob := newParty(t)
	for i := range 10 {
		msg := Message{Channel: ChannelNIP17, From: bob.pk, ID: fmt.Sprintf("%064x", i)}
		wrap, err := Reply(ctx, keys, msg, fmt.Sprintf("reply %d", i), nostr.Now())
		if err != nil {
			t.Fatal(err)
		}
		if ok, _ := wrap.CheckSignature(); !ok || !wrap.CheckID() || wrap.PubKey == inst.pk || wrap.CreatedAt > nostr.Now() {
			t.Fatalf("wrap %+v", wrap)
		}
		rumor, err := nip59.GiftUnwrap(wrap, func(o, c string) (string, error) { return bob.kr.Decrypt(ctx, c, o) })
		if err != nil || rumor.PubKey != inst.pk || rumor.Content != fmt.Sprintf("reply %d", i) {
			t.Fatalf("bob read %+v (%v)", rumor, err)
		}
	}
}
