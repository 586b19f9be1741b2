// Package publish keeps what an instance says about itself on Nostr
// current: its kind-13793 announcement (Announcer), every live container's
// kind-0 profile and kind-63797 status (Profiles), and its pending zap
// receipts (Receipts). Each is a loop run until its context ends, behind
// the small interfaces below for what it needs from the instance; the
// enclave package wires them.
//
// It runs inside the enclave. It must not import parent, nor enclave
// (which imports it).
package publish

import (
	"context"

	"github.com/nbd-wtf/go-nostr"
)

// Publisher sends an event to relays (bot.Bot).
type Publisher interface {
	Publish(ctx context.Context, evt nostr.Event, relays []string) error
}

// Signer signs events with one key (nip.LocalKeys).
type Signer interface {
	SignEvent(ctx context.Context, evt *nostr.Event) error
}
