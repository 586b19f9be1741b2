// Package bot is the instance's Nostr front door: it listens on the
// instance's relays for NIP-17 and NIP-04 DMs and for mentions, answers
// each command once (deduplicated by event id in SQLite, across relays and
// restarts), replies on the channel the command came in, DMs owners the
// deployer's notices, and publishes the instance's profile and relay lists.
//
// It runs inside the enclave. Decrypted DMs are private: they are never
// logged, and neither is anything from a command's text.
package bot

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/billing"
	"github.com/enclaved/enclaved/deployer"
	"github.com/enclaved/enclaved/httpapi"
	"github.com/enclaved/enclaved/internal/backoff"
	"github.com/enclaved/enclaved/internal/ratelog"
	"github.com/enclaved/enclaved/nip"
	"github.com/enclaved/enclaved/store"
)

// Defaults of Config.
const (
	// DefaultLookback is how far back the bot asks relays for events: NIP-59
	// lets a gift wrap's created_at lie up to two days in the past.
	DefaultLookback = 48 * time.Hour
	DefaultRate     = 10 // commands per pubkey per RateWindow
	DefaultWindow   = time.Minute
	maxReplyRelays  = 3
	inboxCacheTTL   = 10 * time.Minute
	maxInboxCache   = 10_000
	// helpCacheTTL is how stale the free capacity that help tells may be.
	helpCacheTTL = time.Second
)

// Config is the bot's part of the instance configuration.
type Config struct {
	// Relays the instance listens on and publishes to.
	Relays []string
	// Name and About go into the instance's kind-0 profile.
	Name, About string
	Pricing     billing.Pricing
	// Retention is how long paused containers are kept (told in help).
	Retention time.Duration
	// Lookback: how old an event may be and still be answered.
	Lookback time.Duration
	// Rate commands per pubkey per Window; more get one "slow down".
	Rate   int
	Window time.Duration
	// Dev marks every event the bot publishes with t=dev, so no client
	// mistakes a dev instance for an attested one.
	Dev bool
	// Reachable (optional) says whether the instance may connect to a
	// relay (the enclave's egress allowlist); nil: every relay.
	Reachable func(relayURL string) bool
	// Observe (optional) is told of every command the bot answers or
	// refuses: how it came (channel: nip17, nip04, mention, rpc), its
	// outcome (ok, refused, failed, rate_limited, invalid) and how long
	// the answer took from when the bot read the event to when the
	// reply was published. Never anything about who sent it.
	Observe func(channel, outcome string, took time.Duration)
	// Instance is what the instance command and RPC method tell: the
	// facts GET /api/v1/instance serves.
	Instance func() httpapi.Instance
}

// Bot answers commands. Create it with New, then call Run.
type Bot struct {
	keys nip.Keys
	self string
	db   *store.DB
	d    *deployer.Deployer
	q    *billing.Quoter
	cfg  Config
	now  func() time.Time
	log  *slog.Logger
	pool *nostr.SimplePool
	rate *limiter
	// floods counts commands dropped from a flooding sender's full lane.
	floods ratelog.Warner
	// stmts are the dedupe's statements, prepared once.
	stmts struct{ seen, mark *sql.Stmt }
	// cpu holds a place per message whose cryptography runs (compute).
	cpu chan struct{}
	// publishTimeout bounds a publication (the relays' OK).
	publishTimeout time.Duration
	// marks are the markSeen calls waiting to be committed.
	marks struct {
		mu      sync.Mutex
		waiting []*mark
		writing bool // writeMarksLoop runs
	}

	// The mutex protects the following elements.
	mu      sync.Mutex
	inbox   map[string]*inboxEntry // pubkey → its kind-10050 relays
	claimed map[string]struct{}    // ids of events on their way to an answer
	free    struct {               // help's free capacity, and when it was read
		units int64
		at    time.Time
	}
	lookups struct {
		queued  map[string]*inboxEntry // pubkeys waiting for a lookup
		running int                    // lookUp loops running
	}
	closed bool
}

// inboxEntry is a pubkey's DM relays: relays is set once ready is closed.
type inboxEntry struct {
	relays []string
	at     time.Time
	ready  chan struct{}
}

// New returns a bot for the instance whose key is keys. now is the clock.
func New(keys nip.Keys, db *store.DB, d *deployer.Deployer, q *billing.Quoter, cfg Config, now func() time.Time, log *slog.Logger) (*Bot, error) {
	self, err := keys.GetPublicKey(context.Background())
	if err != nil {
		return nil, err
	}
	if len(cfg.Relays) == 0 {
		return nil, errors.New("bot: no relays")
	}
	if cfg.Lookback <= 0 {
		cfg.Lookback = DefaultLookback
	}
	if cfg.Rate <= 0 {
		cfg.Rate = DefaultRate
	}
	if cfg.Window <= 0 {
		cfg.Window = DefaultWindow
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Bot{keys: keys, self: self, db: db, d: d, q: q, cfg: cfg, now: now, log: log,
		// Events are checked where they are used (Handle, the DM
		// relay lookup), so the pool's connections need not check
		// them too: each event's signature is checked once.
		pool: nostr.NewSimplePool(context.Background(), nostr.WithRelayOptions(uncheckedEvents{})),
		rate: newLimiter(cfg.Rate, cfg.Window), inbox: map[string]*inboxEntry{}, claimed: map[string]struct{}{},
		cpu:            make(chan struct{}, runtime.GOMAXPROCS(0)),
		publishTimeout: 10 * time.Second}
	b.lookups.queued = map[string]*inboxEntry{}
	var err1, err2 error
	b.stmts.seen, err1 = db.PrepareContext(context.Background(), `SELECT 1 FROM seen_events WHERE id = ?`)
	b.stmts.mark, err2 = db.PrepareContext(context.Background(), `INSERT INTO seen_events (id, at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING`)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("bot: %w", err)
	}
	return b, nil
}

// uncheckedEvents makes a relay connection pass events on without
// checking their signatures.
type uncheckedEvents struct{}

func (uncheckedEvents) ApplyRelayOption(r *nostr.Relay) { r.AssumeValid = true }

// Pubkey is the instance's hex public key.
func (b *Bot) Pubkey() string { return b.self }

// Run publishes the instance's profile and relay lists, then listens on
// every relay and answers commands until ctx ends.
func (b *Bot) Run(ctx context.Context) error {
	defer b.pool.Close("bot stopped")
	if err := b.PublishProfile(ctx); err != nil {
		b.log.Warn("publishing the profile failed", "err", err)
	}
	events := make(chan incoming, 256)
	var wg sync.WaitGroup
	for _, url := range b.cfg.Relays {
		wg.Go(func() { b.listen(ctx, url, events) })
	}
	wg.Go(func() { b.serve(ctx, events) })
	wg.Wait()
	return ctx.Err()
}

// incomingKinds are the kinds the bot reads: NIP-17 gift wraps, NIP-04
// DMs, mentions and RPC requests.
var incomingKinds = []int{nostr.KindGiftWrap, nostr.KindEncryptedDirectMessage, nostr.KindTextNote, nip.KindRPC}

// incoming is an event as a relay delivered it.
type incoming struct {
	evt   *nostr.Event
	relay string // the relay's URL: an RPC reply goes back there
	read  time.Time
}

// filters asks for everything addressed to the instance since the
// lookback, one filter per kind (each is caught up on its own).
func (b *Bot) filters() nostr.Filters {
	since := nostr.Timestamp(b.now().Add(-b.cfg.Lookback - time.Hour).Unix()) // as old as Handle accepts
	p := nostr.TagMap{"p": {b.self}}
	var fs nostr.Filters
	for _, k := range incomingKinds {
		fs = append(fs, nostr.Filter{Kinds: []int{k}, Tags: p, Since: &since})
	}
	return fs
}

// catchUp asks the relay once more for everything the subscription asks
// for, after the subscription's stored events are in. Relays such as
// khatru answer a REQ from storage first and only then start listening:
// an event stored in between reaches the subscription neither way, and a
// DM sent just as the instance started would never be answered. By the
// time the stored events are in, the relay listens; what the second ask
// finds covers the gap (duplicates are dropped by Handle).
func (b *Bot) catchUp(ctx context.Context, r *nostr.Relay, sub *nostr.Subscription, out chan<- incoming) {
	select {
	case <-sub.EndOfStoredEvents:
	case <-ctx.Done():
		return
	}
	for _, f := range b.filters() {
		b.catchUpFilter(ctx, r, f, out)
	}
}

// catchUpFilter passes on what the relay holds for f, with a minute of
// its own: a flood of one kind never keeps the others from being read.
func (b *Bot) catchUpFilter(ctx context.Context, r *nostr.Relay, f nostr.Filter, out chan<- incoming) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	// Relays cap what one query returns (khatru's stores at 500),
	// newest first, and gift wraps are back-dated at random: the
	// lookback is walked back a page at a time, so a DM older than
	// a page of newer ones is still found.
	for page := 0; page < catchUpPages; page++ {
		n, oldest, err := b.catchUpPage(ctx, r, f, out)
		if err != nil {
			b.log.Warn("catching up on a relay failed", "relay", r.URL, "err", err)
			return
		}
		if n == 0 || oldest <= *f.Since {
			break
		}
		if f.Until != nil && oldest >= *f.Until {
			oldest = *f.Until - 1 // a page of one second: move on
		}
		f.Until = &oldest
	}
}

// catchUpPages bounds one catch-up (pages of the relay's own size).
const catchUpPages = 200

// catchUpPage passes on what one query of f returns; n is how many events
// came, oldest the created_at of the oldest.
func (b *Bot) catchUpPage(ctx context.Context, r *nostr.Relay, f nostr.Filter, out chan<- incoming) (n int, oldest nostr.Timestamp, err error) {
	evts, err := r.QueryEvents(ctx, f)
	if err != nil {
		return 0, 0, err
	}
	for evt := range evts {
		if n == 0 || evt.CreatedAt < oldest {
			oldest = evt.CreatedAt
		}
		n++
		select {
		case out <- incoming{evt: evt, relay: r.URL, read: time.Now()}:
		case <-ctx.Done():
			return n, oldest, ctx.Err()
		}
	}
	return n, oldest, nil
}

// listen keeps one subscription open on a relay. Each (re)subscription asks
// again from now − lookback, so back-dated gift wraps that reached the relay
// while the connection was down are still fetched; duplicates are dropped
// by Handle.
func (b *Bot) listen(ctx context.Context, url string, out chan<- incoming) {
	wait := 200 * time.Millisecond
	for ctx.Err() == nil {
		began := time.Now()
		err := b.subscribe(ctx, url, out)
		if ctx.Err() != nil {
			return
		}
		if time.Since(began) > time.Minute {
			wait = 200 * time.Millisecond
		}
		b.log.Warn("relay subscription ended; resubscribing", "relay", url, "err", err, "after", wait)
		if backoff.Sleep(ctx, wait) != nil {
			return
		}
		wait = min(2*wait, 30*time.Second)
	}
}

func (b *Bot) subscribe(ctx context.Context, url string, out chan<- incoming) error {
	r, err := b.pool.EnsureRelay(url)
	if err != nil {
		return err
	}
	subCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(r.Context(), cancel)
	defer stop()
	sub, err := r.Subscribe(subCtx, b.filters())
	if err != nil {
		return err
	}
	b.log.Debug("listening", "relay", url)
	go b.catchUp(subCtx, r, sub, out)
	for evt := range sub.Events {
		select {
		case out <- incoming{evt: evt, relay: r.URL, read: time.Now()}:
		case <-ctx.Done():
			return nil
		}
	}
	return fmt.Errorf("subscription closed: %w", context.Cause(subCtx))
}
