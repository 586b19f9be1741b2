package bot

import (
	"context"
	"database/sql"
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
// relays). Run does the same for every event, many senders at once (see
// pipeline.go); Handle is one event's whole way, synchronously.
func (b *Bot) Handle(ctx context.Context, evt *nostr.Event) {
	if !b.wanted(evt) {
		return
	}
	read := time.Now()
	if msg, ok := b.decode(ctx, incoming{evt: evt, read: read}); ok {
		b.respond(ctx, evt.ID, msg, read)
	}
}

// wanted is what is checked of an event before anything is looked up: its
// age, its kind, that it is not our own.
func (b *Bot) wanted(evt *nostr.Event) bool {
	now := b.now()
	at := evt.CreatedAt.Time()
	if at.Before(now.Add(-b.cfg.Lookback-time.Hour)) || at.After(now.Add(maxFuture)) {
		return false
	}
	return slices.Contains(incomingKinds, evt.Kind) && evt.PubKey != b.self
}

// decode checks and decrypts evt and says whether it is a command to
// answer (then respond answers it, and releases the event's claim).
// Copies from several relays are dropped before any cryptography when
// one was answered, and after the signature check when one is on its way
// (claimed); an id is remembered or claimed only once the event's
// signature proves it, so a forged event carrying a real one's id cannot
// hide it. What is not a command is remembered as seen here; a command is
// remembered just before it is answered.
func (b *Bot) decode(ctx context.Context, in incoming) (nip.Message, bool) {
	evt := in.evt
	if seen, err := b.wasSeen(ctx, evt.ID); err != nil || seen {
		if err != nil {
			b.log.Error("dedupe", "err", err)
		}
		return nip.Message{}, false
	}
	if !b.compute(ctx) {
		return nip.Message{}, false
	}
	if err := nip.Verify(evt); err != nil {
		b.computed()
		b.log.Debug("dropped event", "kind", evt.Kind, "reason", err)
		b.observe(kindChannel(evt.Kind), OutcomeInvalid, in.read)
		return nip.Message{}, false
	}
	if !b.claim(evt.ID) {
		b.computed()
		return nip.Message{}, false // a copy is being answered
	}
	msg, err := nip.DecodeVerified(ctx, b.keys, b.self, evt)
	b.computed()
	// In public, only notes that start with a command are commands, and
	// another instance's reply never is one.
	if err == nil && msg.Channel == nip.ChannelMention && (nip.FromEnclaved(&msg.Event) || !nip.StartsWithVerb(msg.Text)) {
		err = errNotCommand
	}
	if err != nil {
		b.log.Debug("dropped event", "kind", evt.Kind, "reason", err)
		if !errors.Is(err, errNotCommand) && !errors.Is(err, nip.ErrNotForUs) {
			b.observe(kindChannel(evt.Kind), OutcomeInvalid, in.read)
		}
		if _, err := b.markSeen(ctx, evt.ID); err != nil {
			b.log.Error("dedupe", "err", err)
		}
		b.release(evt.ID)
		return nip.Message{}, false
	}
	msg.Relay = in.relay
	return msg, true
}

// kindChannel is the channel events of kind come on.
func kindChannel(kind int) nip.Channel {
	switch kind {
	case nostr.KindGiftWrap:
		return nip.ChannelNIP17
	case nostr.KindEncryptedDirectMessage:
		return nip.ChannelNIP04
	case nip.KindRPC:
		return nip.ChannelRPC
	}
	return nip.ChannelMention
}

// observe tells Config.Observe how a command on ch ended, read at read.
func (b *Bot) observe(ch nip.Channel, outcome string, read time.Time) {
	if b.cfg.Observe != nil {
		b.cfg.Observe(string(ch), outcome, time.Since(read))
	}
}

var errNotCommand = errors.New("a public note that is no command")

// respond answers msg, which came in the event evtID (decode accepted it
// and claimed evtID). The event, and for NIP-17 the rumor, are marked seen
// before the command runs: a crash in between loses one reply rather than
// sending two. Once ctx has ended nothing is marked: the command is
// answered after a restart.
func (b *Bot) respond(ctx context.Context, evtID string, msg nip.Message, read time.Time) {
	defer b.release(evtID)
	if ctx.Err() != nil {
		return
	}
	if first, err := b.markSeen(ctx, evtID, msg.ID); err != nil || !first {
		if err != nil {
			b.log.Error("dedupe", "err", err)
		}
		return
	}
	switch b.rate.allow(msg.From, b.now()) {
	case refuse:
		b.observe(msg.Channel, OutcomeRateLimited, read)
		return
	case warn:
		slow := refused(fmt.Sprintf("slow down: at most %d commands per %s. Try again in a moment.", b.cfg.Rate, b.cfg.Window))
		if msg.Channel == nip.ChannelRPC {
			slow.id = rpcID(msg)
		}
		b.send(ctx, msg, slow)
		b.observe(msg.Channel, OutcomeRateLimited, read)
		return
	}
	// The sender's DM relays are looked up while the command runs.
	if msg.Channel == nip.ChannelNIP17 {
		b.inboxLookup(msg.From)
	}
	var a Answer
	if msg.Channel == nip.ChannelRPC {
		a = b.answerRPC(ctx, msg)
	} else {
		a = b.answer(ctx, msg)
	}
	b.send(ctx, msg, a)
	b.observe(msg.Channel, a.outcome(), read)
}

// compute waits for a turn on a core for the cryptography of one message
// (false: ctx ended first); computed ends it. Turns are taken in the order
// asked (a channel's waiting senders queue): with as many at once as
// there are cores, a message's cryptography runs to its end rather than
// sharing the cores with every other message's, so under load each reply
// waits for the messages before it, not for all of them.
func (b *Bot) compute(ctx context.Context) bool {
	select {
	case b.cpu <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (b *Bot) computed() { <-b.cpu }

// claim marks id as on its way to an answer; false if it already is.
func (b *Bot) claim(id string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.claimed[id]; ok {
		return false
	}
	b.claimed[id] = struct{}{}
	return true
}

func (b *Bot) release(id string) {
	b.mu.Lock()
	delete(b.claimed, id)
	b.mu.Unlock()
}

func (b *Bot) wasSeen(ctx context.Context, id string) (bool, error) {
	var n int
	err := b.stmts.seen.QueryRowContext(ctx, id).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// markSeen remembers ids as seen and says whether the last of them was
// new, once that is committed. Marks made at once are committed together
// (a group commit, by a writer started when the first mark waits and
// gone once none does), so the lanes neither contend for SQLite's write
// lock, whose waiters sleep, nor wait for each other's commits.
func (b *Bot) markSeen(ctx context.Context, ids ...string) (bool, error) {
	m := &mark{ids: ids, done: make(chan struct{})}
	b.marks.mu.Lock()
	b.marks.waiting = append(b.marks.waiting, m)
	if !b.marks.writing {
		b.marks.writing = true
		go b.writeMarksLoop()
	}
	b.marks.mu.Unlock()
	select {
	case <-m.done:
		return m.first, m.err
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// writeMarksLoop commits the waiting marks, a transaction per batch, until
// none waits.
func (b *Bot) writeMarksLoop() {
	for {
		b.marks.mu.Lock()
		batch := b.marks.waiting
		b.marks.waiting = nil
		if len(batch) == 0 {
			b.marks.writing = false
			b.marks.mu.Unlock()
			return
		}
		b.marks.mu.Unlock()
		err := b.writeMarks(batch)
		for _, m := range batch {
			if err != nil {
				m.err = err
			}
			close(m.done)
		}
	}
}

// mark is one markSeen call: first and err are set once done is closed.
type mark struct {
	ids   []string
	first bool
	err   error
	done  chan struct{}
}

// writeMarks records every mark of batch in one transaction, within a
// minute whatever happens to the calls that wait for it.
func (b *Bot) writeMarks(batch []*mark) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tx, err := b.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	stmt := tx.StmtContext(ctx, b.stmts.mark)
	at := b.now().UnixMilli()
	for _, m := range batch {
		for i, id := range m.ids {
			if i > 0 && id == m.ids[i-1] {
				continue
			}
			res, err := stmt.ExecContext(ctx, id, at)
			if err != nil {
				return err
			}
			n, err := res.RowsAffected()
			if err != nil {
				return err
			}
			m.first = n == 1
		}
	}
	return tx.Commit()
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
	if !b.compute(ctx) {
		return
	}
	evt, err := nip.Reply(ctx, b.keys, msg, text, nostr.Timestamp(b.now().Unix()))
	b.computed()
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
	pctx, cancel := context.WithTimeout(ctx, b.publishTimeout)
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
