package bot

import (
	"slices"
	"testing"

	"github.com/nbd-wtf/go-nostr"
)

// A DM relay list naming one relay twice (spelt two ways) and one URL
// that normalising breaks (user info) still gives three distinct,
// reachable relays (found by FuzzDMRelays: the duplicate took a place of
// the three, and "wss://u:p@host" became "wss://host:p").
func TestDMRelaysNormalisedOnce(t *testing.T) {
	evt := &nostr.Event{Kind: nostr.KindDMRelayList, Tags: nostr.Tags{
		{"relay", "wss://A.example.com/"}, {"relay", "wss://a.example.com"},
		{"relay", "wss://user:pass@x.example.com"},
		{"relay", "wss://b.example.com"}, {"relay", "wss://c.example.com"},
	}}
	want := []string{"wss://a.example.com", "wss://b.example.com", "wss://c.example.com"}
	if got := DMRelays(evt); !slices.Equal(got, want) {
		t.Errorf("DMRelays = %q, want %q", got, want)
	}
}
