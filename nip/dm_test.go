package nip

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nbd-wtf/go-nostr"
	"github.com/nbd-wtf/go-nostr/keyer"
	"github.com/nbd-wtf/go-nostr/nip04"
	"github.com/nbd-wtf/go-nostr/nip17"
	"github.com/nbd-wtf/go-nostr/nip44"
	"github.com/nbd-wtf/go-nostr/nip59"
)

type party struct {
	sk, pk string
	kr     keyer.KeySigner
}

func newParty(t testing.TB) party {
	sk := nostr.GeneratePrivateKey()
	pk, _ := nostr.GetPublicKey(sk)
	kr, err := keyer.NewPlainKeySigner(sk)
	if err != nil {
		t.Fatal(err)
	}
	return party{sk, pk, kr}
}

func instance(t testing.TB) (party, *LocalKeys) {
	p := newParty(t)
	k, err := NewLocalKeys(p.sk)
	if err != nil {
		t.Fatal(err)
	}
	return p, k
}

func TestNIP17RoundTrip(t *testing.T) {
	ctx := context.Background()
	inst, keys := instance(t)
	alice := newParty(t)
	_, wrap, err := nip17.PrepareMessage(ctx, "deploy nginx", nil, alice.kr, inst.pk, nil)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := Decode(ctx, keys, inst.pk, &wrap)
	if err != nil {
		t.Fatal(err)
	}
	if msg.Channel != ChannelNIP17 || msg.From != alice.pk || msg.Text != "deploy nginx" || msg.OuterID != wrap.ID || msg.ID == wrap.ID {
		t.Fatalf("decoded %+v", msg)
	}
	// The same rumor in another wrap has the same ID: one command, one answer.
	_, wrap2, _ := nip17.PrepareMessage(ctx, "x", nil, alice.kr, inst.pk, nil)
	rumor, _ := nip59.GiftUnwrap(wrap, func(o, c string) (string, error) { return keys.Decrypt(ctx, c, o) })
	rewrapped, _ := nip59.GiftWrap(rumor, inst.pk, func(s string) (string, error) { return alice.kr.Encrypt(ctx, s, inst.pk) },
		func(e *nostr.Event) error { return alice.kr.SignEvent(ctx, e) }, nil)
	again, err := Decode(ctx, keys, inst.pk, &rewrapped)
	if err != nil || again.ID != msg.ID || again.OuterID == msg.OuterID {
		t.Errorf("rewrapped rumor: id %s outer %s (%v), want id %s", again.ID, again.OuterID, err, msg.ID)
	}
	_ = wrap2

	reply, err := Reply(ctx, keys, msg, "quote: 100 sats", nostr.Now())
	if err != nil {
		t.Fatal(err)
	}
	if reply.Kind != nostr.KindGiftWrap || reply.Tags.GetFirst([]string{"p"}).Value() != alice.pk || reply.PubKey == inst.pk {
		t.Fatalf("reply wrap %+v", reply)
	}
	got, err := nip59.GiftUnwrap(reply, func(o, c string) (string, error) { return alice.kr.Decrypt(ctx, c, o) })
	if err != nil {
		t.Fatal(err)
	}
	if got.PubKey != inst.pk || got.Content != "quote: 100 sats" || got.Kind != nostr.KindDirectMessage {
		t.Errorf("alice read %+v", got)
	}
	if e := got.Tags.GetFirst([]string{"e"}); e == nil || e.Value() != msg.ID {
		t.Errorf("reply does not reference the command: %v", got.Tags)
	}
}

func TestNIP04RoundTrip(t *testing.T) {
	ctx := context.Background()
	inst, keys := instance(t)
	bob := newParty(t)
	shared, _ := nip04.ComputeSharedSecret(inst.pk, bob.sk)
	ct, _ := nip04.Encrypt("status", shared)
	evt := nostr.Event{Kind: 4, CreatedAt: nostr.Now(), Content: ct, Tags: nostr.Tags{{"p", inst.pk}}}
	evt.Sign(bob.sk)
	msg, err := Decode(ctx, keys, inst.pk, &evt)
	if err != nil {
		t.Fatal(err)
	}
	if msg.Channel != ChannelNIP04 || msg.Text != "status" || msg.From != bob.pk || msg.ID != evt.ID {
		t.Fatalf("decoded %+v", msg)
	}
	reply, err := Reply(ctx, keys, msg, "no containers", nostr.Now())
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := reply.CheckSignature(); !ok || reply.Kind != 4 || reply.PubKey != inst.pk {
		t.Fatalf("reply %+v", reply)
	}
	text, err := nip04.Decrypt(reply.Content, shared)
	if err != nil || text != "no containers" {
		t.Errorf("bob read %q, %v", text, err)
	}
}

func TestMentionReplyIsThreaded(t *testing.T) {
	ctx := context.Background()
	inst, keys := instance(t)
	carol, dave := newParty(t), newParty(t)
	root := nostr.Event{Kind: 1, CreatedAt: nostr.Now(), Content: "thread start", Tags: nostr.Tags{}}
	root.Sign(dave.sk)
	mention := nostr.Event{Kind: 1, CreatedAt: nostr.Now(), Content: "nostr:npub1xyz help",
		Tags: nostr.Tags{{"e", root.ID, "", "root"}, {"p", inst.pk}, {"p", dave.pk}}}
	mention.Sign(carol.sk)
	msg, err := Decode(ctx, keys, inst.pk, &mention)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := ParseCommand(msg.Text); err != nil || c.Verb != VerbHelp {
		t.Fatalf("mention text %q parses to %v, %v", msg.Text, c, err)
	}
	reply, err := Reply(ctx, keys, msg, "commands: ...", nostr.Now())
	if err != nil {
		t.Fatal(err)
	}
	want := nostr.Tags{{"e", root.ID, "", "root"}, {"e", mention.ID, "", "reply"}, {"p", carol.pk}, {"p", dave.pk}, ClientTag}
	if reply.Kind != 1 || fmt.Sprint(reply.Tags) != fmt.Sprint(want) {
		t.Errorf("reply tags %v, want %v", reply.Tags, want)
	}
	// A top-level mention becomes the root.
	top := nostr.Event{Kind: 1, CreatedAt: nostr.Now(), Content: "help", Tags: nostr.Tags{{"p", inst.pk}}}
	top.Sign(carol.sk)
	if tags := ThreadTags(top, inst.pk); fmt.Sprint(tags) != fmt.Sprint(nostr.Tags{{"e", top.ID, "", "root"}, {"p", carol.pk}}) {
		t.Errorf("top-level reply tags %v", tags)
	}
}

func TestDecodeRefuses(t *testing.T) {
	ctx := context.Background()
	inst, keys := instance(t)
	eve := newParty(t)
	sign := func(e nostr.Event, sk string) *nostr.Event { e.CreatedAt = nostr.Now(); e.Sign(sk); return &e }

	other := newParty(t)
	_, wrapToOther, _ := nip17.PrepareMessage(ctx, "hi", nil, eve.kr, other.pk, nil)
	forged := sign(nostr.Event{Kind: 1, Content: "help", Tags: nostr.Tags{{"p", inst.pk}}}, eve.sk)
	forged.Content = "delete web"
	badID := sign(nostr.Event{Kind: 1, Content: "help", Tags: nostr.Tags{{"p", inst.pk}}}, eve.sk)
	badID.ID = strings.Repeat("0", 64)
	garbageWrap := sign(nostr.Event{Kind: 1059, Content: "not encrypted", Tags: nostr.Tags{{"p", inst.pk}}}, eve.sk)
	badNIP04 := sign(nostr.Event{Kind: 4, Content: "abc?iv=zzz", Tags: nostr.Tags{{"p", inst.pk}}}, eve.sk)
	fileMsg := nostr.Event{Kind: 15, PubKey: eve.pk, CreatedAt: nostr.Now(), Tags: nostr.Tags{{"p", inst.pk}}}
	fileMsg.ID = fileMsg.GetID()
	fileWrap, _ := nip59.GiftWrap(fileMsg, inst.pk, func(s string) (string, error) { return eve.kr.Encrypt(ctx, s, inst.pk) },
		func(e *nostr.Event) error { return eve.kr.SignEvent(ctx, e) }, nil)
	self := sign(nostr.Event{Kind: 1, Content: "help", Tags: nostr.Tags{{"p", inst.pk}}}, inst.sk)
	reaction := sign(nostr.Event{Kind: 7, Content: "+", Tags: nostr.Tags{{"p", inst.pk}}}, eve.sk)
	huge := sign(nostr.Event{Kind: 1, Content: strings.Repeat("a", MaxContent+1), Tags: nostr.Tags{{"p", inst.pk}}}, eve.sk)

	cases := []struct {
		name string
		evt  *nostr.Event
		want error
	}{
		{"wrap for someone else", &wrapToOther, ErrNotForUs},
		{"forged content", forged, ErrBadEvent},
		{"wrong id", badID, ErrBadEvent},
		{"undecryptable wrap", garbageWrap, ErrBadEvent},
		{"undecryptable nip04", badNIP04, ErrBadEvent},
		{"kind 15 rumor", &fileWrap, ErrUnsupported},
		{"own echo", self, ErrFromSelf},
		{"reaction", reaction, ErrUnsupported},
		{"huge", huge, ErrBadEvent},
	}
	for _, tc := range cases {
		_, err := Decode(ctx, keys, inst.pk, tc.evt)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

// FuzzDecode feeds signed events of each kind with arbitrary content (and, for
// gift wraps, an arbitrary seal under valid encryption) to Decode.
func FuzzDecode(f *testing.F) {
	inst, keys := instance(f)
	sender := newParty(f)
	ctx := context.Background()
	f.Add(uint8(0), "deploy x", `{"kind":13}`)
	f.Add(uint8(1), "abc?iv=AAAAAAAAAAAAAAAAAAAAAA==", "")
	f.Add(uint8(2), "", `{"kind":13,"content":"x","sig":"00","pubkey":"00"}`)
	f.Add(uint8(3), "nostr:npub1 help", "")
	f.Fuzz(func(t *testing.T, which uint8, content, seal string) {
		evt := nostr.Event{CreatedAt: nostr.Now(), Content: content, Tags: nostr.Tags{{"p", inst.pk}}}
		switch which % 4 {
		case 0:
			evt.Kind = 1059
		case 1:
			evt.Kind = 4
		case 2: // a well-encrypted wrap around an arbitrary seal
			evt.Kind = 1059
			ck, _ := nip44.GenerateConversationKey(inst.pk, sender.sk)
			ct, err := nip44.Encrypt(seal, ck)
			if err != nil {
				return
			}
			evt.Content = ct
		case 3:
			evt.Kind = 1
		}
		evt.Sign(sender.sk)
		msg, err := Decode(ctx, keys, inst.pk, &evt)
		if err == nil && msg.From == "" {
			t.Fatalf("decoded a message without a sender: %+v", msg)
		}
	})
}
