package bot

import (
	"encoding/json"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/nip"
)

// FuzzDMRelays feeds kind-10050 DM relay lists, as anyone who DMs the bot
// publishes them, to DMRelays: what it returns is at most maxReplyRelays
// distinct ws:// or wss:// relay URLs in normal form, each from one of the
// list's relay tags. The tags are the fuzzer's lines, their fields split
// at tabs; raw is the same list as the relays' JSON.
func FuzzDMRelays(f *testing.F) {
	f.Add("relay\twss://relay.example.com\nrelay\tws://127.0.0.1:7447/\nrelay\twss://nos.lol", "")
	f.Add("relay\twss://A.example.com/\nrelay\twss://a.example.com\nrelay\thttps://x.example.com\nrelay\twss://b\nrelay\twss://c", "")
	f.Add("relay\n\nrelay\twss://\nrelay\t wss://x.example.com \nrelay\twss://x.example.com:99999\nrelay\twss://[::1]:7447", "")
	f.Add("relay\twss://user:pass@x.example.com/path?q=1#f\nr\twss://y.example.com", "")
	f.Add("", `{"kind":10050,"tags":[["relay","wss://relay.example.com"],["relay"],["relay","ws://x"]]}`)
	f.Fuzz(func(t *testing.T, lines, raw string) {
		evt := nostr.Event{Kind: nostr.KindDMRelayList}
		for _, l := range strings.Split(lines, "\n") {
			evt.Tags = append(evt.Tags, strings.Split(l, "\t"))
		}
		checkDMRelays(t, &evt)
		var e nostr.Event
		if json.Unmarshal([]byte(raw), &e) == nil {
			checkDMRelays(t, &e)
		}
	})
}

func checkDMRelays(t *testing.T, evt *nostr.Event) {
	t.Helper()
	out := DMRelays(evt)
	if len(out) > maxReplyRelays {
		t.Fatalf("%d relays, at most %d", len(out), maxReplyRelays)
	}
	for i, r := range out {
		u, err := url.Parse(r)
		if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" || !nip.ValidRelay(r) {
			t.Fatalf("relay %q is not a ws:// or wss:// URL", r)
		}
		if strings.ContainsFunc(r, func(c rune) bool { return c <= ' ' || c == 0x7f }) {
			t.Fatalf("relay %q holds spaces or control characters", r)
		}
		if nostr.NormalizeURL(r) != r {
			t.Fatalf("relay %q is not in normal form (%q)", r, nostr.NormalizeURL(r))
		}
		if slices.Contains(out[:i], r) {
			t.Fatalf("relay %q twice in %q", r, out)
		}
		if !slices.ContainsFunc(evt.Tags, func(tag nostr.Tag) bool {
			return len(tag) >= 2 && tag[0] == "relay" && nostr.NormalizeURL(tag[1]) == r
		}) {
			t.Fatalf("relay %q is in no relay tag", r)
		}
	}
}
