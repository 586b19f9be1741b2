package publish

import (
	"context"
	"encoding/json"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/nip"
)

type keySigner string

func (k keySigner) SignEvent(_ context.Context, evt *nostr.Event) error { return evt.Sign(string(k)) }

type fixedContainers []Container

func (f fixedContainers) Live(context.Context) ([]Container, error) { return f, nil }

type collect struct{ events []nostr.Event }

func (c *collect) Publish(_ context.Context, evt nostr.Event, _ []string) error {
	c.events = append(c.events, evt)
	return nil
}

func newKey(t *testing.T) (string, string) {
	sk := nostr.GeneratePrivateKey()
	pk, err := nostr.GetPublicKey(sk)
	if err != nil {
		t.Fatal(err)
	}
	return sk, pk
}

// A container's status carries upstream's tags and a 3-hour certificate,
// renewed by a republication at least every hour even when nothing
// changed; its owner is named (admin tag, profile) only if it agreed.
func TestStatusTagsAndCertificateRenewal(t *testing.T) {
	ctx := context.Background()
	isk, ipk := newKey(t)
	csk, cpk := newKey(t)
	_, owner := newKey(t)
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	pub := &collect{}
	c := Container{ID: "c1", Name: "web", Owner: owner, Pubkey: cpk, ImageRef: "reg/app@sha256:00", State: "running",
		Units: 1, PriceMsat: 10_000, BalanceMsat: 21_000}
	p := &Profiles{Containers: fixedContainers{c}, Instance: keySigner(isk), InstanceNpub: nip.Npub(ipk), InstancePubkey: ipk,
		ContainerKey: func(string) Signer { return keySigner(csk) }, Address: func(n string) string { return n + "@example.com" },
		Publisher: pub, Now: func() time.Time { return now }, Log: slog.Default()}

	last := map[string]published{}
	scanAt := func(at time.Time) []nostr.Event {
		t.Helper()
		now, pub.events = at, nil
		if err := p.scan(ctx, last); err != nil {
			t.Fatal(err)
		}
		return pub.events
	}
	status := func(evts []nostr.Event) (nostr.Event, nostr.Event) {
		t.Helper()
		for _, e := range evts {
			if e.Kind == nip.KindContainerStatus {
				var cert nostr.Event
				if err := json.Unmarshal([]byte(nip.TagValue(&e, "tee_cert")), &cert); err != nil {
					t.Fatal(err)
				}
				return e, cert
			}
		}
		t.Fatalf("no status among %d events", len(evts))
		return nostr.Event{}, nostr.Event{}
	}
	t0 := now
	evts := scanAt(t0)
	st, cert := status(evts)
	if ok, _ := st.CheckSignature(); !ok || st.PubKey != cpk {
		t.Fatal("status not signed by the container key")
	}
	if st.Tags.FindWithValue("state", "deployed") == nil || st.Tags.FindWithValue("upgrade", "") == nil ||
		st.Tags.FindWithValue("p", ipk) == nil || st.Tags.FindWithValue("balance", "21") == nil {
		t.Errorf("status tags %v", st.Tags)
	}
	if app := st.Tags.FindWithValue("p", cpk); len(app) < 3 || app[2] != "app" {
		t.Errorf("no p <container> app tag: %v", st.Tags)
	}
	if st.Tags.FindWithValue("p", owner) != nil || strings.Contains(evts[0].Content, nip.Npub(owner)) {
		t.Errorf("the owner is named without its consent: %v %s", st.Tags, evts[0].Content)
	}
	if ok, _ := cert.CheckSignature(); !ok || cert.PubKey != ipk || nip.TagValue(&cert, "expiration") != strconv.FormatInt(t0.Add(3*time.Hour).Unix(), 10) {
		t.Errorf("certificate %v by %s", cert.Tags, cert.PubKey)
	}

	if evts := scanAt(t0.Add(59 * time.Minute)); len(evts) != 0 {
		t.Errorf("republished with nothing changed within the hour: %d events", len(evts))
	}
	_, cert = status(scanAt(t0.Add(StatusEvery)))
	if exp := nip.TagValue(&cert, "expiration"); exp != strconv.FormatInt(t0.Add(StatusEvery+3*time.Hour).Unix(), 10) {
		t.Errorf("renewed certificate expires %s", exp)
	}

	// admin=yes: named as admin, and in the profile.
	c.AdminPublic = true
	p.Containers = fixedContainers{c}
	evts = scanAt(t0.Add(3 * StatusEvery))
	st, _ = status(evts)
	if admin := st.Tags.FindWithValue("p", owner); len(admin) < 3 || admin[2] != "admin" {
		t.Errorf("no admin tag for an owner who agreed: %v", st.Tags)
	}
	if !strings.Contains(evts[0].Content, nip.Npub(owner)) {
		t.Errorf("profile of a public owner: %s", evts[0].Content)
	}
}
