package nip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/nbd-wtf/go-nostr"
)

// Channel is how a message reached the instance, and so how its reply goes.
type Channel string

// The channels of DESIGN.md.
const (
	ChannelNIP17   Channel = "nip17"
	ChannelNIP04   Channel = "nip04"
	ChannelMention Channel = "mention"
)

// MaxContent bounds the content of any event the instance decodes.
const MaxContent = 64 << 10

// Keys is the instance key as DM code needs it: signing and NIP-44 (the
// go-nostr Keyer) plus NIP-04, which Keyer lacks.
type Keys interface {
	nostr.Keyer
	NIP04Encrypt(ctx context.Context, plaintext, recipient string) (string, error)
	NIP04Decrypt(ctx context.Context, ciphertext, sender string) (string, error)
}

// Message is a decoded message to the instance.
type Message struct {
	Channel Channel
	// ID names what was said: the rumor id for NIP-17 (the same across every
	// wrap and relay that carries it), the event id otherwise. Commands are
	// answered once per ID.
	ID string
	// OuterID is the id of the event received (the gift wrap for NIP-17).
	OuterID   string
	From      string // author's hex pubkey (for NIP-17, the seal's signer)
	Text      string // plaintext; private for DMs: never log it
	CreatedAt nostr.Timestamp
	// Event is the kind-1 mention, the kind-4 DM, the kind-14 rumor or
	// the kind-29425 request.
	Event nostr.Event
	// Unreadable: an RPC request whose content did not decrypt (Text is
	// empty); it is answered with an error.
	Unreadable bool
	// Relay is the relay the event came from ("" if unknown): an RPC
	// reply goes back there.
	Relay string
}

// Decode errors. Callers drop such events without a reply (for a gift wrap
// the sender is unknown until it decrypts).
var (
	ErrNotForUs    = errors.New("not addressed to this instance")
	ErrFromSelf    = errors.New("sent by this instance")
	ErrBadEvent    = errors.New("invalid event")
	ErrUnsupported = errors.New("unsupported event")
)

// Decode checks and decrypts an event addressed to self (hex pubkey).
func Decode(ctx context.Context, keys Keys, self string, evt *nostr.Event) (Message, error) {
	if err := Verify(evt); err != nil {
		return Message{}, err
	}
	return DecodeVerified(ctx, keys, self, evt)
}

// Verify checks what nobody but the event's author can make: that its id
// is the hash of what it says and that its signature is the author's (and
// that its content is of a size worth reading). Only a verified id may be
// remembered as seen: a forged copy must not hide the real event.
func Verify(evt *nostr.Event) error {
	if len(evt.Content) > MaxContent {
		return fmt.Errorf("%w: content of %d bytes", ErrBadEvent, len(evt.Content))
	}
	if evt.GetID() != evt.ID {
		return fmt.Errorf("%w: id does not match content", ErrBadEvent)
	}
	if ok, _ := evt.CheckSignature(); !ok {
		return fmt.Errorf("%w: bad signature", ErrBadEvent)
	}
	return nil
}

// DecodeVerified is Decode of an event Verify accepted.
func DecodeVerified(ctx context.Context, keys Keys, self string, evt *nostr.Event) (Message, error) {
	if !tagged(evt.Tags, "p", self) {
		return Message{}, ErrNotForUs
	}
	switch evt.Kind {
	case nostr.KindGiftWrap:
		rumor, err := unwrap(ctx, keys, evt)
		if err != nil {
			return Message{}, fmt.Errorf("%w: gift wrap: %v", ErrBadEvent, err)
		}
		if rumor.PubKey == self {
			return Message{}, ErrFromSelf
		}
		if rumor.Kind != nostr.KindDirectMessage {
			return Message{}, fmt.Errorf("%w: rumor kind %d", ErrUnsupported, rumor.Kind)
		}
		if !tagged(rumor.Tags, "p", self) {
			return Message{}, ErrNotForUs
		}
		return Message{Channel: ChannelNIP17, ID: rumor.ID, OuterID: evt.ID, From: rumor.PubKey,
			Text: rumor.Content, CreatedAt: rumor.CreatedAt, Event: rumor}, nil
	case nostr.KindEncryptedDirectMessage:
		if evt.PubKey == self {
			return Message{}, ErrFromSelf
		}
		text, err := keys.NIP04Decrypt(ctx, evt.Content, evt.PubKey)
		if err != nil {
			return Message{}, fmt.Errorf("%w: nip04: %v", ErrBadEvent, err)
		}
		return Message{Channel: ChannelNIP04, ID: evt.ID, OuterID: evt.ID, From: evt.PubKey,
			Text: text, CreatedAt: evt.CreatedAt, Event: *evt}, nil
	case KindRPC:
		if evt.PubKey == self {
			return Message{}, ErrFromSelf
		}
		// A request that does not decrypt is still answered (with an
		// error): its signed sender is known, and a program waits.
		text, err := keys.Decrypt(ctx, evt.Content, evt.PubKey)
		return Message{Channel: ChannelRPC, ID: evt.ID, OuterID: evt.ID, From: evt.PubKey,
			Text: text, CreatedAt: evt.CreatedAt, Event: *evt, Unreadable: err != nil}, nil
	case nostr.KindTextNote:
		if evt.PubKey == self {
			return Message{}, ErrFromSelf
		}
		return Message{Channel: ChannelMention, ID: evt.ID, OuterID: evt.ID, From: evt.PubKey,
			Text: evt.Content, CreatedAt: evt.CreatedAt, Event: *evt}, nil
	default:
		return Message{}, fmt.Errorf("%w: kind %d", ErrUnsupported, evt.Kind)
	}
}

// Reply builds the signed event that answers msg with text on msg's channel:
// a gift wrap for NIP-17 (no copy to ourselves, so the bot never reads its
// own replies), a kind-4 DM for NIP-04, a NIP-10 threaded kind-1 note for a
// mention. A mention's reply is public: callers must keep private data out.
func Reply(ctx context.Context, keys Keys, msg Message, text string, now nostr.Timestamp) (nostr.Event, error) {
	evt, _, err := build(ctx, keys, msg, text, now)
	return evt, err
}

// build returns the event to publish and the id of what was said (the
// rumor's id for NIP-17), which a reply's e tag will name.
func build(ctx context.Context, keys Keys, msg Message, text string, now nostr.Timestamp) (nostr.Event, string, error) {
	self, err := keys.GetPublicKey(ctx)
	if err != nil {
		return nostr.Event{}, "", err
	}
	switch msg.Channel {
	case ChannelNIP17:
		rumor := nostr.Event{Kind: nostr.KindDirectMessage, PubKey: self, CreatedAt: now, Content: text,
			Tags: dmTags(msg)}
		rumor.ID = rumor.GetID()
		wrap, err := giftWrap(ctx, keys, rumor, msg.From)
		return wrap, rumor.ID, err
	case ChannelNIP04:
		ct, err := keys.NIP04Encrypt(ctx, text, msg.From)
		if err != nil {
			return nostr.Event{}, "", err
		}
		evt := nostr.Event{Kind: nostr.KindEncryptedDirectMessage, CreatedAt: now, Content: ct,
			Tags: dmTags(msg)}
		err = keys.SignEvent(ctx, &evt)
		return evt, evt.ID, err
	case ChannelMention:
		evt := nostr.Event{Kind: nostr.KindTextNote, CreatedAt: now, Content: text, Tags: append(ThreadTags(msg.Event, self), ClientTag)}
		err = keys.SignEvent(ctx, &evt)
		return evt, evt.ID, err
	default:
		return nostr.Event{}, "", fmt.Errorf("reply: unknown channel %q", msg.Channel)
	}
}

// DM builds a direct message to a pubkey that is not an answer to anything
// (a notice, or a client's first message): NIP-04 on the NIP-04 channel,
// else NIP-17, since a notice may hold private details that a public
// mention reply must not. It returns the event to publish and the id that
// answers will reference in their e tag.
func DM(ctx context.Context, keys Keys, ch Channel, to, text string, now nostr.Timestamp) (nostr.Event, string, error) {
	if ch != ChannelNIP04 {
		ch = ChannelNIP17
	}
	return build(ctx, keys, Message{Channel: ch, From: to}, text, now)
}

func dmTags(msg Message) nostr.Tags {
	tags := nostr.Tags{{"p", msg.From}}
	if msg.ID != "" {
		tags = append(tags, nostr.Tag{"e", msg.ID})
	}
	return tags
}

// ThreadTags returns NIP-10 tags for a reply to parent: a marked root e tag
// (the parent's root, or the parent itself), a marked reply e tag when the
// parent is not the root, and p tags for the parent's author and everyone it
// tagged, except self.
func ThreadTags(parent nostr.Event, self string) nostr.Tags {
	root := ""
	for _, t := range parent.Tags {
		if len(t) >= 4 && t[0] == "e" && t[3] == "root" {
			root = t[1]
		}
	}
	var tags nostr.Tags
	if root == "" || root == parent.ID {
		tags = append(tags, nostr.Tag{"e", parent.ID, "", "root"})
	} else {
		tags = append(tags, nostr.Tag{"e", root, "", "root"}, nostr.Tag{"e", parent.ID, "", "reply"})
	}
	seen := map[string]bool{self: true}
	add := func(pk string) {
		if !seen[pk] && nostr.IsValidPublicKey(pk) {
			seen[pk] = true
			tags = append(tags, nostr.Tag{"p", pk})
		}
	}
	add(parent.PubKey)
	for _, t := range parent.Tags {
		if len(t) >= 2 && t[0] == "p" {
			add(t[1])
		}
	}
	return tags
}

// ClientTag marks the public replies of an enclaved instance (NIP-89's
// client tag), so that no instance answers another's reply: two instances
// tagged in one thread never talk to each other forever.
var ClientTag = nostr.Tag{"client", "enclaved"}

// FromEnclaved says whether evt is an enclaved instance's public reply.
func FromEnclaved(evt *nostr.Event) bool {
	return evt.Tags.FindWithValue("client", ClientTag[1]) != nil
}

// TagValue is the value of evt's first tag named name, or "".
func TagValue(evt *nostr.Event, name string) string {
	if t := evt.Tags.Find(name); len(t) > 1 {
		return t[1]
	}
	return ""
}

func tagged(tags nostr.Tags, name, value string) bool {
	for _, t := range tags {
		if len(t) >= 2 && t[0] == name && t[1] == value {
			return true
		}
	}
	return false
}

// RelayHostPort is a ws:// or wss:// URL's host:port.
func RelayHostPort(u string) (string, bool) {
	rest, ok := strings.CutPrefix(u, "wss://")
	port := "443"
	if !ok {
		if rest, ok = strings.CutPrefix(u, "ws://"); !ok {
			return "", false
		}
		port = "80"
	}
	host, _, _ := strings.Cut(rest, "/")
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host, true
	}
	return net.JoinHostPort(host, port), true
}
