// Command enclaved-load is a load generator for an enclaved instance: many
// renters, each with its own key and its own relay connections, sending
// NIP-17 DMs (kind-14 rumors, sealed and gift-wrapped with NIP-44) to the
// instance's bot over real relays and timing each reply.
//
// It is written with go-nostr alone and imports no package of this module:
// it is a client like any renter's, so what it measures is what a renter
// sees, and it cannot share a bug with the instance's own protocol code
// (internal/deps checks the import graph).
//
// Two modes:
//
//   - closed loop (-mode closed): -renters renters at once, each sending
//     -count commands one after the other, each waiting for its reply;
//   - open loop (-mode open): commands arrive at -rate per second for
//     -duration, spread over the renters round robin, whether or not
//     earlier ones were answered.
//
// A run is bounded: every reply is waited for at most -timeout, the whole
// run at most -deadline, and the open loop sends at most -max commands. It
// prints a JSON Result on stdout (for internal/bench) and one human line on
// stderr. Relays are dialled as given; nothing else is reached.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nbd-wtf/go-nostr"
	"github.com/nbd-wtf/go-nostr/nip19"
)

// config is one run's parameters.
type config struct {
	Relays   []string
	Instance string // hex pubkey
	Command  string
	Expect   string
	Mode     string
	Renters  int
	Count    int
	Rate     float64
	Duration time.Duration
	Max      int
	Timeout  time.Duration
	Deadline time.Duration
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "enclaved-load:", err)
		os.Exit(1)
	}
}

type relayFlags []string

func (r *relayFlags) String() string     { return strings.Join(*r, ",") }
func (r *relayFlags) Set(v string) error { *r = append(*r, v); return nil }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("enclaved-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c config
	var relays relayFlags
	fs.Var(&relays, "relay", "relay URL (ws:// or wss://); repeatable; required")
	to := fs.String("to", "", "the instance's npub or hex pubkey; required")
	fs.StringVar(&c.Command, "cmd", "help", "the command each renter sends: help, status, deploy <image> …")
	fs.StringVar(&c.Expect, "expect", "", "text every reply must contain (default: lnbc for deploy, anything else)")
	fs.StringVar(&c.Mode, "mode", "closed", "closed (each renter waits for its reply) or open (fixed arrival rate)")
	fs.IntVar(&c.Renters, "renters", 10, "renters, each with its own key and connections")
	fs.IntVar(&c.Count, "count", 10, "closed loop: commands per renter")
	fs.Float64Var(&c.Rate, "rate", 50, "open loop: commands per second, all renters together")
	fs.DurationVar(&c.Duration, "duration", 10*time.Second, "open loop: how long commands keep arriving")
	fs.IntVar(&c.Max, "max", 100_000, "open loop: at most this many commands")
	fs.DurationVar(&c.Timeout, "timeout", 30*time.Second, "how long each reply is waited for")
	fs.DurationVar(&c.Deadline, "deadline", 5*time.Minute, "the whole run's limit")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: enclaved-load -relay URL -to NPUB [flags]\n\nSends NIP-17 DMs from many renters to an enclaved instance and times the replies.\nJSON result on stdout, a summary on stderr.\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(args) > 0 && args[0] == "help" {
		fs.Usage()
		return nil
	}
	c.Relays = relays
	if len(c.Relays) == 0 || *to == "" {
		fs.Usage()
		return errors.New("-relay and -to are required")
	}
	pk, err := pubkey(*to)
	if err != nil {
		return err
	}
	c.Instance = pk
	if c.Expect == "" && strings.HasPrefix(strings.ToLower(strings.TrimSpace(c.Command)), "deploy") {
		c.Expect = "lnbc"
	}
	if c.Renters < 1 || (c.Mode == "closed" && c.Count < 1) || (c.Mode == "open" && (c.Rate <= 0 || c.Duration <= 0)) {
		return errors.New("want -renters ≥ 1, and -count ≥ 1 (closed) or -rate and -duration > 0 (open)")
	}
	if c.Mode != "closed" && c.Mode != "open" {
		return fmt.Errorf("-mode %q: want closed or open", c.Mode)
	}
	ctx, cancel := context.WithTimeout(ctx, c.Deadline)
	defer cancel()
	res, err := load(ctx, c)
	if err != nil {
		return err
	}
	fmt.Fprintln(stderr, res.human())
	enc := json.NewEncoder(stdout)
	return enc.Encode(res)
}

// pubkey is the hex pubkey an npub or hex string names.
func pubkey(s string) (string, error) {
	if strings.HasPrefix(s, "npub1") {
		prefix, v, err := nip19.Decode(s)
		if err != nil || prefix != "npub" {
			return "", fmt.Errorf("-to %q: not an npub", s)
		}
		return v.(string), nil
	}
	if !nostr.IsValidPublicKey(s) {
		return "", fmt.Errorf("-to %q: not an npub or hex pubkey", s)
	}
	return s, nil
}

// load connects the renters, then runs the loop c.Mode names.
func load(ctx context.Context, c config) (Result, error) {
	renters, err := connect(ctx, c)
	if err != nil {
		return Result{}, err
	}
	defer func() {
		for _, r := range renters {
			r.close()
		}
	}()
	t := &tally{want: c.Expect}
	t.res.Mode, t.res.Command, t.res.Renters = c.Mode, c.Command, c.Renters
	start := time.Now()
	var wg sync.WaitGroup
	one := func(r *renter) {
		t.sent()
		lat, text, err := r.ask(ctx, c.Command, c.Timeout)
		t.done(lat, text, err, time.Now())
	}
	if c.Mode == "closed" {
		for _, r := range renters {
			wg.Go(func() {
				for range c.Count {
					if ctx.Err() != nil {
						return
					}
					one(r)
				}
			})
		}
	} else {
		t.res.OfferedPerSecond = c.Rate
		every := time.Duration(float64(time.Second) / c.Rate)
		n := min(c.Max, int(c.Duration/every))
		timer := time.NewTimer(0)
		defer timer.Stop()
	arrivals:
		for i := range n {
			// Arrivals follow the schedule, not the previous send: a
			// late tick sends at once.
			timer.Reset(time.Until(start.Add(time.Duration(i) * every)))
			select {
			case <-timer.C:
			case <-ctx.Done():
				break arrivals
			}
			r := renters[i%len(renters)]
			wg.Go(func() { one(r) })
		}
	}
	wg.Wait()
	return t.result(start), nil
}

// connect starts c.Renters renters, at most 16 connecting at a time.
func connect(ctx context.Context, c config) ([]*renter, error) {
	renters := make([]*renter, c.Renters)
	errs := make([]error, c.Renters)
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i := range renters {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			renters[i], errs[i] = newRenter(ctx, c.Relays, c.Instance)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, r := range renters {
			if r != nil {
				r.close()
			}
		}
		return nil, err
	}
	return renters, nil
}
