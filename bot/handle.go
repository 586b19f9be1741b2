package bot

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/nip"
)

// maxFuture bounds how far in the future an event's created_at may be.
const maxFuture = 15 * time.Minute

// Handle answers one event from a relay, at most once per event id and,
// for NIP-17, per rumor id (the same DM wrapped twice or sent to several
// relays). An event is marked seen before it is answered: a crash in
// between loses one reply rather than sending two.
func (b *Bot) Handle(ctx context.Context, evt *nostr.Event) {
	now := b.now()
	at := evt.CreatedAt.Time()
	if at.Before(now.Add(-b.cfg.Lookback-time.Hour)) || at.After(now.Add(maxFuture)) {
		return
	}
	if !slices.Contains(incomingKinds, evt.Kind) {
		return
	}
	if evt.PubKey == b.self {
		return // our own echo
	}
	// Copies from several relays are dropped before any cryptography; an
	// id is remembered only once the event's signature proves it, so a
	// forged event carrying a real one's id cannot hide it.
	if seen, err := b.wasSeen(ctx, evt.ID); err != nil || seen {
		if err != nil {
			b.log.Error("dedupe", "err", err)
		}
		return
	}
	if err := nip.Verify(evt); err != nil {
		b.log.Debug("dropped event", "kind", evt.Kind, "reason", err)
		return
	}
	if first, err := b.markSeen(ctx, evt.ID); err != nil || !first {
		if err != nil {
			b.log.Error("dedupe", "err", err)
		}
		return
	}
	msg, err := nip.DecodeVerified(ctx, b.keys, b.self, evt)
	if err != nil {
		b.log.Debug("dropped event", "kind", evt.Kind, "reason", err)
		return
	}
	if msg.ID != evt.ID {
		if first, err := b.markSeen(ctx, msg.ID); err != nil || !first {
			return
		}
	}
	// In public, only notes that start with a command are commands, and
	// another instance's reply never is one.
	if msg.Channel == nip.ChannelMention && (nip.FromEnclaved(&msg.Event) || !nip.StartsWithVerb(msg.Text)) {
		return
	}
	switch b.rate.allow(msg.From, now) {
	case refuse:
		return
	case warn:
		b.reply(ctx, msg, fmt.Sprintf("slow down: at most %d commands per %s. Try again in a moment.", b.cfg.Rate, b.cfg.Window))
		return
	}
	text := b.answer(ctx, msg)
	b.reply(ctx, msg, text)
}

func (b *Bot) wasSeen(ctx context.Context, id string) (bool, error) {
	var n int
	err := b.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM seen_events WHERE id = ?`, id).Scan(&n)
	return n > 0, err
}

func (b *Bot) markSeen(ctx context.Context, id string) (bool, error) {
	res, err := b.db.ExecContext(ctx, `INSERT INTO seen_events (id, at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING`,
		id, b.now().UnixMilli())
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// PruneSeen forgets events seen longer ago than the lookback plus a day:
// Handle drops anything that old before looking it up.
func (b *Bot) PruneSeen(ctx context.Context) error {
	_, err := b.db.ExecContext(ctx, `DELETE FROM seen_events WHERE at < ?`,
		b.now().Add(-b.cfg.Lookback-24*time.Hour).UnixMilli())
	return err
}

// reply sends text back on msg's channel.
func (b *Bot) reply(ctx context.Context, msg nip.Message, text string) {
	evt, err := nip.Reply(ctx, b.keys, msg, text, nostr.Timestamp(b.now().Unix()))
	if err != nil {
		b.log.Error("building a reply failed", "channel", msg.Channel, "err", err)
		return
	}
	b.publish(ctx, evt, b.relaysFor(ctx, msg.Channel, msg.From))
}

// relaysFor returns where a message to pubkey goes: for NIP-17 those of
// its kind-10050 DM relays the instance may reach, if it published any,
// else (and for every other channel) the instance's relays, which the
// renter reached us on.
func (b *Bot) relaysFor(ctx context.Context, ch nip.Channel, pubkey string) []string {
	if ch == nip.ChannelNIP17 {
		if rs := b.Reachable(b.inboxRelays(ctx, pubkey)); len(rs) > 0 {
			return rs
		}
	}
	return b.cfg.Relays
}

// Reachable is the relays of rs the instance may connect to.
func (b *Bot) Reachable(rs []string) []string {
	if b.cfg.Reachable == nil {
		return rs
	}
	var out []string
	for _, r := range rs {
		if b.cfg.Reachable(r) {
			out = append(out, r)
		}
	}
	return out
}

func (b *Bot) inboxRelays(ctx context.Context, pubkey string) []string {
	now := b.now()
	b.mu.Lock()
	e, ok := b.inbox[pubkey]
	b.mu.Unlock()
	if ok && now.Sub(e.at) < inboxCacheTTL {
		return e.relays
	}
	qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var newest *nostr.Event
	for re := range b.pool.FetchMany(qctx, b.cfg.Relays, nostr.Filter{Kinds: []int{nostr.KindDMRelayList}, Authors: []string{pubkey}, Limit: 1}) {
		if newest == nil || re.Event.CreatedAt > newest.CreatedAt {
			newest = re.Event
		}
	}
	var relays []string
	if newest != nil {
		relays = DMRelays(newest)
	}
	b.mu.Lock()
	if len(b.inbox) > 10_000 {
		clear(b.inbox)
	}
	b.inbox[pubkey] = inboxEntry{relays: relays, at: now}
	b.mu.Unlock()
	return relays
}

// DMRelays returns the valid ws:// or wss:// relay tags of a kind-10050
// event, normalised and each once, at most maxReplyRelays of them. A URL
// is checked again once normalised: that can turn a valid one into an
// invalid one ("wss://u:p@host" becomes "wss://host:p").
func DMRelays(evt *nostr.Event) []string {
	var out []string
	for _, t := range evt.Tags {
		if len(t) < 2 || t[0] != "relay" || len(out) == maxReplyRelays {
			continue
		}
		r := nostr.NormalizeURL(t[1])
		if !nip.ValidRelay(t[1]) || !nip.ValidRelay(r) || slices.Contains(out, r) {
			continue
		}
		out = append(out, r)
	}
	return out
}

// Publish sends a signed event to relays; it fails unless one took it.
func (b *Bot) Publish(ctx context.Context, evt nostr.Event, relays []string) error {
	return b.publish(ctx, evt, relays)
}

// publish sends evt to relays and logs (without content) where it failed.
func (b *Bot) publish(ctx context.Context, evt nostr.Event, relays []string) error {
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var errs []error
	ok := 0
	for res := range b.pool.PublishMany(pctx, relays, evt) {
		if res.Error != nil {
			errs = append(errs, fmt.Errorf("%s: %w", res.RelayURL, res.Error))
		} else {
			ok++
		}
	}
	if ok == 0 {
		err := errors.Join(errs...)
		b.log.Warn("publish failed on every relay", "kind", evt.Kind, "id", evt.ID, "err", err)
		return fmt.Errorf("publish kind %d: %w", evt.Kind, err)
	}
	return nil
}
