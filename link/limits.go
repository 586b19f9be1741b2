package link

import (
	"fmt"
	"maps"
)

// Limits bounds the streams of a session. The streams the peer opened and
// the streams this side opened are counted apart, each against Total and
// against its service's cap in PerService, so that neither side's streams
// crowd out the other's, and a flood of one service (public connections
// forwarded in as ingress streams) leaves room for the others (the
// enclave's egress dials, blobs, metadata and log).
//
// A peer's open beyond a cap is refused with a reason such as "too many
// ingress streams (at most 512)"; Open beyond a cap fails at once with a
// *LimitError, without asking the peer.
type Limits struct {
	// Total bounds the streams open at once in each direction (default
	// MaxStreams).
	Total int
	// PerService bounds each service's streams in the direction that
	// opens them; a service not listed is bounded by Total only. nil:
	// DefaultLimits' caps.
	PerService map[Service]int
}

// DefaultLimits are the limits of NewSession. The caps of the enclave's
// services add up to less than Total, so each always has room whatever
// the others do; ingress is half of Total.
func DefaultLimits() Limits {
	return Limits{Total: MaxStreams, PerService: map[Service]int{
		Ingress: 512,
		Dial:    768,
		BlobPut: 32,
		BlobGet: 32,
		Meta:    8,
		Log:     8,
	}}
}

func (l Limits) orDefault() Limits {
	d := DefaultLimits()
	if l.Total <= 0 {
		l.Total = d.Total
	}
	if l.PerService == nil {
		l.PerService = d.PerService
	} else {
		l.PerService = maps.Clone(l.PerService)
	}
	return l
}

// LimitError is a stream that was not opened because its direction
// already had as many streams open as the session's Limits allow.
type LimitError struct {
	Service Service // the capped service; 0 when the total was reached
	Max     int
}

func (e *LimitError) Error() string { return "link: " + e.Reason() }

// Reason is the refusal's text, as the peer is told it.
func (e *LimitError) Reason() string {
	if e.Service == 0 {
		return fmt.Sprintf("too many streams (at most %d)", e.Max)
	}
	return fmt.Sprintf("too many %s streams (at most %d)", e.Service, e.Max)
}

// counts are the streams open in one direction.
type counts struct {
	total int
	svc   [256]int
}

func (c *counts) remove(svc Service) {
	c.total--
	c.svc[svc]--
}

// dir is the index in Session.open of the direction of stream id.
func (s *Session) dir(id uint32) int {
	if s.ours(id) {
		return 0
	}
	return 1
}

// admit counts a new stream of svc, opened by the peer or by this side,
// or says why the limits refuse it. s.mu is held.
func (s *Session) admit(peer bool, svc Service) *LimitError {
	d := 0
	if peer {
		d = 1
	}
	c := &s.open[d]
	if n, ok := s.limits.PerService[svc]; ok && c.svc[svc] >= n {
		return &LimitError{Service: svc, Max: n}
	}
	if c.total >= s.limits.Total {
		return &LimitError{Max: s.limits.Total}
	}
	c.total++
	c.svc[svc]++
	s.counted[d][svc]++
	return nil
}

// Streams says how many streams of svc are open: those this side opened
// and those the peer opened.
func (s *Session) Streams(svc Service) (ours, peers int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.open[0].svc[svc], s.open[1].svc[svc]
}

// StreamCounts are one service's streams by who opened them: [0] this
// side, [1] the peer.
type StreamCounts struct {
	Open   [2]int    // open now
	Opened [2]uint64 // opened so far (refused opens not counted)
}

// Counts are svc's streams in this session.
func (s *Session) Counts(svc Service) StreamCounts {
	s.mu.Lock()
	defer s.mu.Unlock()
	var c StreamCounts
	for i := range s.open {
		c.Open[i], c.Opened[i] = s.open[i].svc[svc], s.counted[i][svc]
	}
	return c
}

// Counts are svc's streams: those open in the live session, and those
// opened in every session the keeper kept.
func (k *Keeper) Counts(svc Service) StreamCounts {
	k.mu.Lock()
	defer k.mu.Unlock()
	var c StreamCounts
	if k.cur != nil {
		c = k.cur.Counts(svc)
	}
	for i := range c.Opened {
		c.Opened[i] += k.past[i][svc]
	}
	return c
}
