package pages

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/deployer"
	"github.com/enclaved/enclaved/httpapi"
	"github.com/enclaved/enclaved/nip"
	"github.com/enclaved/enclaved/records"
)

type announcer nostr.Event

func (a announcer) Announcement(context.Context) (nostr.Event, error) { return nostr.Event(a), nil }

type containers map[string]records.Record

func (c containers) Find(_ context.Context, target string) (records.Record, error) {
	if r, ok := c[target]; ok {
		return r, nil
	}
	return records.Record{}, records.ErrNotFound
}

type reach struct{}

func (reach) Links(rec records.Record) deployer.Links {
	return deployer.Links{Address: rec.Name + "@example.org"}
}

type lnurls struct{}

func (lnurls) LNURL(name string) string { return "lnurl1" + name }

const (
	owner         = "0000000000000000000000000000000000000000000000000000000000000001"
	containerKey  = "0000000000000000000000000000000000000000000000000000000000000002"
	instanceKey   = "0000000000000000000000000000000000000000000000000000000000000003"
	privateEnvVal = "do-not-show-this"
	maintainerKey = "0000000000000000000000000000000000000000000000000000000000000004"
)

func site(t *testing.T) *Site {
	t.Helper()
	now := time.Unix(1_800_000_000, 0)
	pcrs := map[uint][]byte{0: make([]byte, 48), 1: make([]byte, 48), 2: make([]byte, 48)}
	rel, err := nip.ReleaseSignature(nip.Repo, "v1.2.3", "prod", pcrs, nostr.Timestamp(now.Unix()))
	if err != nil {
		t.Fatal(err)
	}
	launch := nip.InstanceSignature(make([]byte, 48), "prod", nostr.Timestamp(now.Unix()))
	for _, e := range []*nostr.Event{&rel, &launch} {
		if err := e.Sign(maintainerKey); err != nil {
			t.Fatal(err)
		}
	}
	launch.Tags = append(launch.Tags, nostr.Tag{"tampered"}) // its signature no longer holds
	ann := nip.AnnouncementEvent(nip.Announcement{Name: "test", Version: "v1", Mode: "prod", InboxRelay: "wss://relay.example",
		Releases: []nostr.Event{rel}, Instance: launch.String(), InstancePubkey: launch.PubKey,
		PCRs: map[uint][]byte{0: make([]byte, 48)}, PriceMsat: 12_500, Unit: "1 cpu", FreeUnits: 2, Capacity: 8,
		ContainerEgress: []string{"api.example.com:443"}, ContainersConfined: true, InstanceEgress: []string{"relay.example:443"}},
		nostr.Timestamp(now.Unix()))
	rec := func(name, state string) records.Record {
		return records.Record{Name: name, State: state, Owner: owner, Pubkey: containerKey, Units: 2, PriceMsat: 10_000,
			BalanceMsat: 20_000, ImageRef: "registry.example/app@sha256:ab", Env: [][2]string{{"TOKEN", privateEnvVal}}}
	}
	return &Site{Info: httpapi.Instance{Npub: nip.Npub(instanceKey), Relays: []string{"wss://relay.example"}},
		Announcer: announcer(ann), Reach: reach{}, LNURLs: lnurls{}, Now: func() time.Time { return now },
		Log:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		Containers: containers{"app": rec("app", records.StatePaused), "quote": rec("quote", records.StateQuoted), "gone": rec("gone", records.StateRemoved)}}
}

func get(t *testing.T, s *Site, path string) (int, string) {
	t.Helper()
	mux := http.NewServeMux()
	s.Routes(mux)
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
	if ct := w.Header().Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("%s: content type %q", path, ct)
	}
	if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("%s: CSP %q", path, csp)
	}
	return w.Code, w.Body.String()
}

// The front page reads everything from the announcement: mode, PCRs,
// price (with its millisatoshis), capacity, egress.
func TestFrontPageReadsTheAnnouncement(t *testing.T) {
	code, body := get(t, site(t), "/")
	if code != 200 {
		t.Fatalf("status %d", code)
	}
	for _, want := range []string{">prod<", "production AWS Nitro Enclave", "PCR0", strings.Repeat("00", 48), "12.500 sats per unit-hour",
		"2 of 8 units", "<code>api.example.com:443</code>", "Every other connection is refused", "<code>relay.example:443</code>",
		nip.Npub(instanceKey), `href="nostr:` + nip.Npub(instanceKey) + `"`, "<svg class=\"qr\"",
		"<td>release</td><td class=\"mono\">" + nip.Npub(mustPub(maintainerKey)) + "</td><td>PCR0, PCR1 and PCR2",
		"(version v1.2.3)", "<td>instance <strong>(signature does not verify)</strong></td>"} {
		if !strings.Contains(body, want) {
			t.Errorf("the front page lacks %q", want)
		}
	}
	if strings.Contains(body, "<script") {
		t.Error("the front page has a script")
	}
}

// A container's page shows its public facts and never its owner or env;
// quotes, removed and unknown names, and hostile ones, get an escaped 404.
func TestContainerPageIsPublicOnly(t *testing.T) {
	s := site(t)
	code, body := get(t, s, "/c/app")
	if code != 200 {
		t.Fatalf("status %d", code)
	}
	for _, want := range []string{"paused", "registry.example/app@sha256:ab", "20 sats", "2 units, 20 sats per hour", "1 h of running time",
		"app@example.org", "lnurl1app", `href="lightning:lnurl1app"`, nip.Npub(containerKey)} {
		if !strings.Contains(body, want) {
			t.Errorf("the container page lacks %q", want)
		}
	}
	for _, secret := range []string{owner, nip.Npub(owner), privateEnvVal, "TOKEN"} {
		if strings.Contains(body, secret) {
			t.Errorf("the container page shows %q", secret)
		}
	}
	for _, name := range []string{"quote", "gone", "nosuch", "%3Cscript%3Ealert(1)%3C%2Fscript%3E", strings.Repeat("a", 200)} {
		code, body := get(t, s, "/c/"+name)
		if code != http.StatusNotFound || strings.Contains(body, "<script>") || !strings.Contains(body, "Not here") {
			t.Errorf("/c/%.20s: %d\n%s", name, code, body)
		}
	}
}

func mustPub(sk string) string {
	pk, err := nostr.GetPublicKey(sk)
	if err != nil {
		panic(err)
	}
	return pk
}
