package bot

import (
	"context"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/nip"
)

// Senders' DM relays (kind 10050), for NIP-17 replies: cached per pubkey
// for inboxCacheTTL, and looked up in batches. A relay answers a lookup by
// searching its store, and one search for many authors costs it about
// what one for a single author does; a crowd of new senders (each asking
// for the first time) is a few lookups, not one each.
const (
	maxLookups     = 4   // lookups at once
	maxLookupBatch = 100 // pubkeys asked for in one lookup
	lookupTimeout  = 3 * time.Second
)

// inboxRelays is pubkey's kind-10050 DM relays (nil: none published, or
// not found in time), from the cache or looked up now.
func (b *Bot) inboxRelays(ctx context.Context, pubkey string) []string {
	e := b.inboxLookup(pubkey)
	select {
	case <-e.ready:
		return e.relays
	case <-ctx.Done():
		return nil
	}
}

// inboxLookup returns pubkey's cache entry, queueing its lookup if it has
// none fresh; one lookup per pubkey is under way at a time, whoever waits
// for it.
func (b *Bot) inboxLookup(pubkey string) *inboxEntry {
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	if e, ok := b.inbox[pubkey]; ok && now.Sub(e.at) < inboxCacheTTL {
		return e
	}
	if len(b.inbox) > maxInboxCache {
		clear(b.inbox)
	}
	e := &inboxEntry{at: now, ready: make(chan struct{})}
	b.inbox[pubkey] = e
	b.lookups.queued[pubkey] = e
	if b.lookups.running < maxLookups {
		b.lookups.running++
		go b.lookUp()
	}
	return e
}

// lookUp looks up queued pubkeys, a batch at a time, until none is left.
// Each batch is bounded by lookupTimeout, whatever asked for it.
func (b *Bot) lookUp() {
	for {
		b.mu.Lock()
		batch := make(map[string]*inboxEntry, min(len(b.lookups.queued), maxLookupBatch))
		for pk, e := range b.lookups.queued {
			if len(batch) == maxLookupBatch {
				break
			}
			batch[pk] = e
			delete(b.lookups.queued, pk)
		}
		if len(batch) == 0 {
			b.lookups.running--
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		found := b.fetchInboxes(batch)
		for pk, e := range batch {
			e.relays = found[pk]
			close(e.ready)
		}
	}
}

// fetchInboxes asks the instance's relays for the newest kind-10050 event
// of each pubkey of batch and returns their DM relays. Events are checked
// here: the pool's connections take relays' events unchecked (Handle
// checks what it answers).
func (b *Bot) fetchInboxes(batch map[string]*inboxEntry) map[string][]string {
	ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
	defer cancel()
	authors := make([]string, 0, len(batch))
	for pk := range batch {
		authors = append(authors, pk)
	}
	newest := map[string]*nostr.Event{}
	for re := range b.pool.FetchMany(ctx, b.cfg.Relays, nostr.Filter{Kinds: []int{nostr.KindDMRelayList}, Authors: authors}) {
		e := re.Event
		if _, asked := batch[e.PubKey]; !asked || e.Kind != nostr.KindDMRelayList {
			continue
		}
		if old := newest[e.PubKey]; old != nil && old.CreatedAt >= e.CreatedAt {
			continue
		}
		if nip.Verify(e) != nil {
			continue
		}
		newest[e.PubKey] = e
	}
	found := make(map[string][]string, len(newest))
	for pk, e := range newest {
		found[pk] = DMRelays(e)
	}
	return found
}
