package main

import (
	"fmt"
	"slices"
	"sync"
	"time"
)

// Result is one run's report, printed as JSON on stdout. Its field names
// are what internal/bench reads; keep them.
type Result struct {
	Mode     string `json:"mode"` // closed or open
	Command  string `json:"command"`
	Renters  int    `json:"renters"`
	Sent     int    `json:"sent"`
	Replies  int    `json:"replies"`
	Timeouts int    `json:"timeouts"`
	// Unexpected counts replies that did not contain -expect (or were a
	// rate limit's "slow down"); FirstUnexpected is the first one's text.
	Unexpected      int    `json:"unexpected"`
	FirstUnexpected string `json:"first_unexpected,omitempty"`
	Errors          int    `json:"errors"` // sends that failed (the relay refused, or no connection)
	FirstError      string `json:"first_error,omitempty"`
	// Seconds is from the first send to the last reply (or timeout);
	// PerSecond is Replies / Seconds.
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"per_second"`
	// ReplyRate is the rate at which replies came, from the first to the
	// last: under an open loop the rate the instance sustained, whatever
	// the last reply's latency.
	ReplyRate float64 `json:"reply_rate"`
	// Latency of the replies that arrived, in milliseconds: from the
	// wrap's publication to the reply's arrival.
	Latency Latency `json:"latency_ms"`
	// OfferedPerSecond is the open loop's arrival rate (0 for closed).
	OfferedPerSecond float64 `json:"offered_per_second,omitempty"`
}

// Latency is a distribution in milliseconds.
type Latency struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// tally collects the outcomes of commands from many goroutines.
type tally struct {
	want string

	// The mutex protects the following elements.
	mu   sync.Mutex
	res  Result
	lats []time.Duration
	last time.Time // the last reply's arrival or timeout
	// The first and last replies' arrivals.
	firstReply, lastReply time.Time
}

func (t *tally) sent() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.res.Sent++
}

// done records one command's outcome, at now.
func (t *tally) done(lat time.Duration, text string, err error, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.last = now
	switch {
	case err == errNoReply:
		t.res.Timeouts++
	case err != nil:
		t.res.Errors++
		if t.res.FirstError == "" {
			t.res.FirstError = err.Error()
		}
	default:
		t.res.Replies++
		t.lats = append(t.lats, lat)
		if t.firstReply.IsZero() {
			t.firstReply = now
		}
		t.lastReply = now
		if !expected(text, t.want) {
			t.res.Unexpected++
			if t.res.FirstUnexpected == "" {
				t.res.FirstUnexpected = clip(text, 200)
			}
		}
	}
}

// result is the report of a run that started at start.
func (t *tally) result(start time.Time) Result {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.res
	if !t.last.IsZero() {
		r.Seconds = t.last.Sub(start).Seconds()
	}
	if r.Seconds > 0 {
		r.PerSecond = float64(r.Replies) / r.Seconds
	}
	if d := t.lastReply.Sub(t.firstReply).Seconds(); r.Replies > 1 && d > 0 {
		r.ReplyRate = float64(r.Replies-1) / d
	}
	r.Latency = summarize(t.lats)
	return r
}

// summarize is the distribution of lats (nearest-rank percentiles).
func summarize(lats []time.Duration) Latency {
	if len(lats) == 0 {
		return Latency{}
	}
	s := slices.Clone(lats)
	slices.Sort(s)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	at := func(p float64) float64 {
		i := int(p*float64(len(s))+0.999999) - 1
		return ms(s[min(max(i, 0), len(s)-1)])
	}
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return Latency{P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: ms(s[len(s)-1]), Mean: ms(sum / time.Duration(len(s)))}
}

// human is the one-line summary for stderr.
func (r Result) human() string {
	return fmt.Sprintf("%s %q: %d renters, %d sent, %d replies (%d unexpected), %d timeouts, %d errors in %.2fs: %.1f replies/s; latency p50 %.1f ms, p90 %.1f, p99 %.1f, max %.1f",
		r.Mode, r.Command, r.Renters, r.Sent, r.Replies, r.Unexpected, r.Timeouts, r.Errors, r.Seconds, r.PerSecond,
		r.Latency.P50, r.Latency.P90, r.Latency.P99, r.Latency.Max)
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
