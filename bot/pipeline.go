package bot

import (
	"context"
	"sync"

	"github.com/enclaved/enclaved/nip"
)

// How the bot answers many senders at once.
//
// Events from every relay meet in one stream, in the order they arrive.
// Decoders check and decrypt them in parallel (that is the CPU work: the
// signatures, the gift wrap's key agreement). A sequencer then hands the
// decoded commands on in the order their events arrived, each to its
// sender's lane: a sender's commands are answered one after the other, in
// that order, each reply published (and acknowledged, or given up on)
// before the next command of the same sender is looked at, while other
// senders' lanes run meanwhile. A slow command (a deploy waits for the
// registry, the node and the backup) or a slow relay holds up its own
// sender only.
const (
	// decoders check and decrypt events at once.
	decoders = 8
	// maxPending bounds the commands handed to lanes and not yet answered
	// (and so the replies being published at once, and the lanes'
	// goroutines): beyond, the sequencer waits, and so do the relays'
	// subscriptions.
	maxPending = 512
	// maxPerSender bounds one sender's commands waiting in its lane (less
	// where the rate limit is lower: perSender): beyond, the sender is
	// flooding (its rate limit would refuse them anyway), and the command
	// is dropped unanswered and unmarked rather than take the slots every
	// other sender needs.
	maxPerSender = maxPending / 4
	// decodeAhead bounds the events read but not yet handed on.
	decodeAhead = 256
)

// job is one event on its way through the pipeline.
type job struct {
	in   incoming
	msg  nip.Message
	ok   bool          // msg is a command to answer (decided once done is closed)
	done chan struct{} // closed once decoded
}

// serve answers the events from in until ctx ends, then waits for what it
// started.
func (b *Bot) serve(ctx context.Context, in <-chan incoming) {
	decodeQ := make(chan *job, decodeAhead)
	ordered := make(chan *job, decodeAhead)
	l := newLanes(maxPending, b.perSender())
	var wg sync.WaitGroup
	for range decoders {
		wg.Go(func() {
			for j := range decodeQ {
				j.msg, j.ok = b.decode(ctx, j.in)
				close(j.done)
			}
		})
	}
	wg.Go(func() {
		for j := range ordered {
			select {
			case <-j.done:
			case <-ctx.Done():
				return
			}
			if !j.ok {
				continue
			}
			msg, evtID, read := j.msg, j.in.evt.ID, j.in.read
			switch l.push(ctx, msg.From, func() { b.respond(ctx, evtID, msg, read) }) {
			case laneFull:
				b.release(evtID)
				b.observe(msg.Channel, OutcomeRateLimited, read)
				b.floods.Warn(b.log, "a sender's lane is full; its commands are dropped", "max", b.perSender())
			case laneStopped:
				b.release(evtID)
				return
			}
		}
	})
	func() {
		defer close(decodeQ)
		defer close(ordered)
		for {
			var e incoming
			select {
			case <-ctx.Done():
				return
			case e = <-in:
			}
			if !b.wanted(e.evt) {
				continue
			}
			// Into the order first: every job the sequencer waits
			// for is then on its way to a decoder.
			j := &job{in: e, done: make(chan struct{})}
			select {
			case ordered <- j:
			case <-ctx.Done():
				return
			}
			select {
			case decodeQ <- j:
			case <-ctx.Done():
				return
			}
		}
	}()
	wg.Wait()
	l.wait()
	// Events decoded but never handed on were not marked seen: they are
	// answered after a restart (or the next serve).
	b.mu.Lock()
	clear(b.claimed)
	b.mu.Unlock()
}

// lanes runs each sender's commands one at a time, in the order pushed,
// and different senders' at once.
type lanes struct {
	slots     chan struct{} // one per command pushed and not yet run
	perSender int           // at most this many of one sender's waiting
	wg        sync.WaitGroup

	// The mutex protects the following elements.
	mu     sync.Mutex
	queued map[string][]func() // sender → commands waiting; present while its lane runs
}

func newLanes(max, perSender int) *lanes {
	return &lanes{slots: make(chan struct{}, max), perSender: perSender, queued: map[string][]func(){}}
}

// What push did with a command.
const (
	laneQueued  = iota
	laneFull    // the sender already has perSender waiting: not queued
	laneStopped // ctx ended while it waited for a slot: not queued
)

// push queues f in sender's lane, waiting for a slot first. Only the
// sequencer pushes, so a lane's length cannot grow between the check and
// the append.
func (l *lanes) push(ctx context.Context, sender string, f func()) int {
	l.mu.Lock()
	full := len(l.queued[sender]) >= l.perSender
	l.mu.Unlock()
	if full {
		return laneFull
	}
	select {
	case l.slots <- struct{}{}:
	case <-ctx.Done():
		return laneStopped
	}
	l.mu.Lock()
	q, running := l.queued[sender]
	l.queued[sender] = append(q, f)
	l.mu.Unlock()
	if !running {
		l.wg.Go(func() { l.run(sender) })
	}
	return laneQueued
}

// run runs sender's queued commands until none is left.
func (l *lanes) run(sender string) {
	for {
		l.mu.Lock()
		q := l.queued[sender]
		if len(q) == 0 {
			delete(l.queued, sender)
			l.mu.Unlock()
			return
		}
		f := q[0]
		q[0] = nil
		l.queued[sender] = q[1:]
		l.mu.Unlock()
		f()
		<-l.slots
	}
}

// wait waits until every lane has run out.
func (l *lanes) wait() { l.wg.Wait() }

// perSender is how many of one sender's commands may wait in its lane:
// one more than its rate limit lets through at once, within maxPerSender.
func (b *Bot) perSender() int {
	return min(max(b.cfg.Rate+1, 2), maxPerSender)
}
