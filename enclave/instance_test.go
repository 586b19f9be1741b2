package enclave_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/attest"
	"github.com/enclaved/enclaved/config"
	"github.com/enclaved/enclaved/deployer"
	"github.com/enclaved/enclaved/deployer/docker"
	"github.com/enclaved/enclaved/enclave"
	"github.com/enclaved/enclaved/httpapi"
	"github.com/enclaved/enclaved/images"
	"github.com/enclaved/enclaved/internal/testenv"
	"github.com/enclaved/enclaved/nip"
	"github.com/enclaved/enclaved/records"
	"github.com/enclaved/enclaved/store"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// clock is an injectable clock; it follows the real one until set.
type clock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return time.Now().Add(c.offset) }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

// instance is a whole instance on the real stack: relays, LND regtest,
// Docker and the local registry.
type instance struct {
	in       *enclave.Instance
	key      enclave.Key
	db       *store.DB
	relays   []string
	http     string
	clock    *clock
	attester *attest.Dev
	stop     func()
}

// startInstance runs an instance with its state in dir, on relays, until
// stop or the end of the test.
func startInstance(t testing.TB, dir string, relays []string, sets ...string) *instance {
	t.Helper()
	return startInstanceWith(t, dir, relays, nil, sets...)
}

// startInstanceWith is startInstance with parts changed by with.
func startInstanceWith(t testing.TB, dir string, relays []string, with func(*enclave.Parts), sets ...string) *instance {
	t.Helper()
	return startInstanceAt(t, dir, relays, &clock{}, with, sets...)
}

// startInstanceAt is startInstanceWith on clock clk (kept across restarts).
func startInstanceAt(t testing.TB, dir string, relays []string, clk *clock, with func(*enclave.Parts), sets ...string) *instance {
	t.Helper()
	return startInstanceLogged(t, dir, relays, clk, with, testLogger(), sets...)
}

// startInstanceLogged is startInstanceAt logging to log.
func startInstanceLogged(t testing.TB, dir string, relays []string, clk *clock, with func(*enclave.Parts), log *slog.Logger, sets ...string) *instance {
	t.Helper()
	ln := testenv.Lightning(t)
	testenv.Docker(t)
	ctx, cancel := context.WithCancel(context.Background())
	key, err := enclave.LoadOrCreateKey(filepath.Join(dir, "instance.key"))
	if err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(ctx, filepath.Join(dir, "enclaved.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.ClaimInstance(ctx, key.PublicKey()); err != nil {
		t.Fatal(err)
	}
	rt, err := docker.New(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Unit = config.Unit{MilliCPUs: 250, MemoryMiB: 64, Pids: 64, DiskMiB: 128}
	cfg.Instance.CapacityUnits = 4
	cfg.Nostr.CommandsPerMinute = 100
	for _, kv := range sets {
		k, v, _ := strings.Cut(kv, "=")
		if err := cfg.Set(k, v); err != nil {
			t.Fatal(err)
		}
	}
	attester, err := attest.LoadOrCreateDev(dir, bytes.Repeat([]byte{1}, 48), clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	parts := enclave.Parts{DB: db, Key: key, Runtime: rt, Lightning: testenv.InvoiceClient(t, ln.Operator),
		Images: &images.Resolver{}, Relays: relays, Attester: attester}
	if with != nil {
		with(&parts)
	}
	in, err := enclave.NewInstance(cfg, parts, "test", clk.Now, log)
	if err != nil {
		t.Fatal(err)
	}
	inst := &instance{in: in, key: key, db: db, relays: relays, clock: clk, attester: attester}
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx, func(addr string) { ready <- addr }) }()
	var once sync.Once
	inst.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("instance stopped with %v", err)
			}
			db.Close()
			rt.Close()
		})
	}
	t.Cleanup(func() {
		inst.stop()
		removeContainers(t, key.PublicKey())
	})
	select {
	case inst.http = <-ready:
	case err := <-done:
		t.Fatalf("instance exited: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("instance did not come up")
	}
	return inst
}

// testLogger discards logs unless ENCLAVED_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("ENCLAVED_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// removeContainers removes what an instance left in Docker.
func removeContainers(t testing.TB, instance string) {
	rt, err := docker.New(context.Background())
	if err != nil {
		t.Error(err)
		return
	}
	defer rt.Close()
	list, _ := rt.List(context.Background())
	for _, c := range list {
		if c.Labels[deployer.LabelInstance] == instance {
			rt.Remove(context.Background(), c.ID)
		}
	}
}

// startInstanceB is startInstance for benchmarks: room for many containers.
func startInstanceB(b *testing.B, relay string) *instance {
	return startInstance(b, b.TempDir(), []string{relay}, "instance.capacity_units=1000",
		"http.invoices_per_client_per_minute=1000000", "http.invoices_per_minute=1000000")
}

// pay pays the BOLT-11 invoice in text from the payer node.
func pay(t testing.TB, text string) {
	t.Helper()
	if _, err := testenv.Lightning(t).Payer.Pay(context.Background(), testenv.Invoice(t, text)); err != nil {
		t.Fatal(err)
	}
}

// deploy has c send cmd (a deploy) by NIP-17, pays the quote and waits
// until the container name runs.
func (i *instance) deploy(t *testing.T, c *testenv.Client, cmd, name string) {
	t.Helper()
	self := i.key.PublicKey()
	c.Send(t, "nip17", self, cmd)
	pay(t, c.Await(t, self, "Quote").Text)
	c.Await(t, self, name+" is running")
}

func (i *instance) container(t *testing.T, name string) records.Record {
	t.Helper()
	r, err := i.in.Deployer.Records.Find(context.Background(), name)
	if err != nil {
		t.Fatalf("container %s: %v", name, err)
	}
	return r
}

func (i *instance) get(t *testing.T, path string, v any) int {
	t.Helper()
	resp, err := http.Get("http://" + i.http + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode
}

// The main loop on each channel: deploy → quote with invoice → the payer
// pays → the container runs with the quoted limits and hardening → status
// and the HTTP API report it.
func TestDeployPayRunOnEveryChannel(t *testing.T) {
	relay := testenv.Relay(t)
	imgs := testenv.Images(t)
	dc := testenv.Docker(t)
	inst := startInstance(t, t.TempDir(), []string{relay.URL})
	self := inst.key.PublicKey()

	for _, ch := range []string{"nip17", "nip04", "mention"} {
		t.Run(ch, func(t *testing.T) {
			c := testenv.NewClient(t, relay.URL)
			name := "app-" + ch
			id := c.Send(t, ch, self, fmt.Sprintf("deploy %s units=1 hours=1 name=%s", imgs.Hello.Ref, name))
			quote := c.Await(t, self, "Quote")
			if quote.Channel != ch || !quote.RefersTo(id) {
				t.Errorf("quote came by %s referring to %v, want %s referring to %s", quote.Channel, quote.Event.Tags, ch, id)
			}
			for _, want := range []string{imgs.Hello.Digest, "0.25 CPU, 64 MiB memory, 64 processes", "10 sats per unit-hour × 1 unit(s) × 1 h = 10 sats"} {
				if !strings.Contains(quote.Text, want) {
					t.Errorf("quote lacks %q:\n%s", want, quote.Text)
				}
			}
			pay(t, quote.Text)
			running := c.Await(t, self, name+" is running")
			// Notices are private: a renter who came by mention gets them by NIP-17.
			if want := map[string]string{"nip17": "nip17", "nip04": "nip04", "mention": "nip17"}[ch]; running.Channel != want {
				t.Errorf("running notice by %s, want %s", running.Channel, want)
			}
			rec := inst.container(t, name)
			if !strings.Contains(running.Text, rec.Npub()) || !strings.Contains(running.Text, "10 sats") {
				t.Errorf("running notice lacks the npub or balance:\n%s", running.Text)
			}
			testenv.CheckHardened(t, dc, rec.DockerID, testenv.Hardening{NanoCPUs: 250_000_000, Memory: 64 << 20, Pids: 64,
				Network: deployer.RuntimeName(rec.ID), ReadonlyRoot: false}) // hello declares a volume
			testenv.WaitLog(t, dc, rec.DockerID, "listening")

			c.Send(t, ch, self, "status")
			status := c.Await(t, self, name+": running")
			if !strings.Contains(status.Text, rec.Npub()) {
				t.Errorf("status lacks the container npub:\n%s", status.Text)
			}

			var got httpapi.Container
			if code := inst.get(t, "/api/v1/containers/"+rec.Npub(), &got); code != http.StatusOK {
				t.Fatalf("GET container: %d", code)
			}
			if got.State != "running" || got.Image != imgs.Hello.Ref || got.Units != 1 || got.BalanceMsat <= 0 || got.BalanceMsat > 10_000 || got.PaidUntil == nil {
				t.Errorf("HTTP status %+v", got)
			}
		})
	}

	var info struct {
		httpapi.Instance
		FreeUnits int64 `json:"free_units"`
	}
	inst.get(t, "/api/v1/instance", &info)
	if info.Pubkey != self || info.CapacityUnits != 4 || info.FreeUnits != 1 || info.MsatPerUnitHour != 10_000 || !info.Dev || len(info.Relays) != 1 {
		t.Errorf("instance info %+v", info)
	}
	var notFound map[string]string
	if code := inst.get(t, "/api/v1/containers/npub1nothere", &notFound); code != http.StatusNotFound && code != http.StatusBadRequest {
		t.Errorf("unknown container: %d %v", code, notFound)
	}
}

// One command gets one reply: the same gift wrap delivered twice to one
// relay and once to another, and again after a restart, is answered once.
func TestOneReplyPerGiftWrap(t *testing.T) {
	a, b := testenv.Relay(t), testenv.Relay(t)
	relays := []string{a.URL, b.URL}
	dir := t.TempDir()
	inst := startInstance(t, dir, relays)
	self := inst.key.PublicKey()
	c := testenv.NewClient(t, relays...)

	wrap, rumorID := c.NIP17(t, self, "help")
	c.Publish(t, wrap, a.URL)
	c.Publish(t, wrap, a.URL)
	c.Publish(t, wrap, b.URL)
	c.AwaitFunc(t, "the help reply", func(r testenv.Reply) bool { return r.RefersTo(rumorID) })

	inst.stop()
	inst = startInstance(t, dir, relays)
	// The restarted bot fetched the wrap again from both relays (it asks
	// for the last 48 h). A command sent after it, through each relay, is
	// answered only after those were handled by the same relay connection.
	for i, r := range relays {
		// (Verbs ignore case.)
		w, id := c.NIP17(t, self, []string{"status", "Help"}[i])
		c.Publish(t, w, r)
		c.AwaitFunc(t, "the sync reply", func(rp testenv.Reply) bool { return rp.RefersTo(id) })
	}
	ids := map[string]bool{}
	for _, r := range relays {
		for _, e := range testenv.Query(t, r, nostr.Filter{Kinds: []int{nostr.KindGiftWrap}, Tags: nostr.TagMap{"p": {c.PK}}}) {
			ids[e.ID] = true
		}
	}
	// One reply to the help, one per sync status.
	if len(ids) != 1+len(relays) {
		t.Errorf("%d distinct replies on the relays, want %d (one per command)", len(ids), 1+len(relays))
	}
}

// A NIP-17 reply goes to the sender's kind-10050 DM relays when it has
// published them, and not to the instance's relays.
func TestNIP17ReplyGoesToSendersInbox(t *testing.T) {
	shared, inbox := testenv.Relay(t), testenv.Relay(t)
	inst := startInstance(t, t.TempDir(), []string{shared.URL})
	self := inst.key.PublicKey()
	c := testenv.NewClient(t, shared.URL, inbox.URL)
	list := nostr.Event{Kind: nostr.KindDMRelayList, CreatedAt: nostr.Now(), Tags: nostr.Tags{{"relay", inbox.URL}}}
	list.Sign(c.SK)
	c.Publish(t, list, shared.URL)

	wrap, id := c.NIP17(t, self, "help")
	c.Publish(t, wrap, shared.URL)
	c.AwaitFunc(t, "the help reply", func(r testenv.Reply) bool { return r.RefersTo(id) })

	// The instance told clients where to reach it.
	own := testenv.Query(t, shared.URL, nostr.Filter{Authors: []string{self}, Kinds: []int{nostr.KindProfileMetadata, nostr.KindRelayListMetadata, nostr.KindDMRelayList}})
	if len(own) != 3 {
		t.Fatalf("instance's profile and relay lists: %d events", len(own))
	}
	for _, e := range own {
		ok := false
		switch e.Kind {
		case nostr.KindProfileMetadata:
			ok = strings.Contains(e.Content, `"name":"enclaved"`)
		case nostr.KindRelayListMetadata:
			ok = e.Tags.FindWithValue("r", shared.URL) != nil
		case nostr.KindDMRelayList:
			ok = e.Tags.FindWithValue("relay", shared.URL) != nil
		}
		if !ok || !e.CheckID() || e.Tags.FindWithValue("t", "dev") == nil {
			t.Errorf("kind %d: %v %q", e.Kind, e.Tags, e.Content)
		}
	}
	for relay, want := range map[string]int{inbox.URL: 1, shared.URL: 0} {
		if got := testenv.Query(t, relay, nostr.Filter{Kinds: []int{nostr.KindGiftWrap}, Tags: nostr.TagMap{"p": {c.PK}}}); len(got) != want {
			t.Errorf("%s holds %d replies, want %d", relay, len(got), want)
		}
	}
}

// Past the per-pubkey limit a sender gets one "slow down" and nothing
// more; other senders are not affected.
func TestRateLimitPerPubkey(t *testing.T) {
	relay := testenv.Relay(t)
	inst := startInstance(t, t.TempDir(), []string{relay.URL}, "nostr.commands_per_minute=10")
	self := inst.key.PublicKey()
	flood, other := testenv.NewClient(t, relay.URL), testenv.NewClient(t, relay.URL)
	for i := range 12 {
		// Distinct texts, so each is its own command.
		flood.Send(t, "nip04", self, "status"+strings.Repeat(" ", i))
	}
	n, slow := 0, 0
	for n+slow < 11 {
		r := flood.AwaitFunc(t, "a reply", func(r testenv.Reply) bool { return r.From == self })
		if strings.HasPrefix(r.Text, "slow down") {
			slow++
		} else {
			n++
		}
	}
	if n != 10 || slow != 1 {
		t.Errorf("%d answers and %d slow-downs, want 10 and 1", n, slow)
	}
	if r := other.Ask(t, "nip04", self, "status"); strings.HasPrefix(r.Text, "slow down") {
		t.Error("another sender was slowed down")
	}
	// The twelfth command stays unanswered: after the other sender's
	// reply, the flooder holds no further reply.
	select {
	case r := <-flood.Replies():
		t.Errorf("the flooder got a reply past the limit: %q", r.Text)
	default:
	}
}

// Bad input gets a one-line reason and a pointer to help; owner-only
// commands refuse others; private things are refused in public.
func TestCommandErrors(t *testing.T) {
	relay := testenv.Relay(t)
	imgs := testenv.Images(t)
	saved := &saves{}
	inst := startInstanceWith(t, t.TempDir(), []string{relay.URL}, func(p *enclave.Parts) { saved.db, p.Backup = p.DB, saved })
	self := inst.key.PublicKey()
	owner, stranger := testenv.NewClient(t, relay.URL), testenv.NewClient(t, relay.URL)
	inst.deploy(t, owner, "deploy "+imgs.Hello.Ref+" name=mine", "mine")

	for _, tc := range []struct{ channel, text, want string }{
		{"nip17", "frobnicate", "unknown command \"frobnicate\". Send `help`"},
		{"nip17", "deploy", "Send `help`"},
		{"nip17", "deploy 127.0.0.1:1/nothing:here", "cannot deploy"},
		{"nip17", "deploy " + imgs.Hello.Ref + " units=999", "Send `help`"},
		{"nip17", "deploy " + imgs.Hello.Ref + " units=4", "cannot deploy: this instance has 3 free unit(s) of 4"},
		{"nip17", "deploy " + imgs.Hello.Ref + " name=mine", "the name mine is taken"},
		{"nip17", "topup mine lots", "Send `help`"},
		{"nip17", "stop mine", "mine is not yours"},
		{"nip04", "delete mine", "mine is not yours"},
		{"nip17", "logs mine", "mine is not yours"},
		{"mention", "logs mine", "logs are private"},
		{"mention", "deploy " + imgs.Hello.Ref + " env=TOKEN=secret", "env values are accepted only by DM"},
		{"nip17", "stop nothing-here", "no container nothing-here"},
		{"nip17", "status npub1qqqq", "not a valid npub"},
	} {
		r := stranger.Ask(t, tc.channel, self, tc.text)
		if !strings.Contains(r.Text, tc.want) || strings.Count(r.Text, "\n") > 0 {
			t.Errorf("%s %q: got %q, want one line containing %q", tc.channel, tc.text, r.Text, tc.want)
		}
	}
	// The owner may (once hello has written its line: it runs, but may
	// not have printed yet).
	testenv.WaitLog(t, testenv.Docker(t), inst.container(t, "mine").DockerID, "listening")
	if r := owner.Ask(t, "nip17", self, "logs mine 5"); !strings.Contains(r.Text, "listening") {
		t.Errorf("owner's logs: %q", r.Text)
	}
	// Each change is saved outside the enclave before the owner hears of
	// it, so a restart cannot undo what they were told.
	for _, step := range []struct{ cmd, reply, state string }{
		{"stop mine", "mine is stopped", records.StateStopped},
		{"start mine", "mine is running", records.StateRunning},
		{"delete mine", "mine is deleted", records.StateRemoved},
	} {
		if r := owner.Ask(t, "nip17", self, step.cmd); !strings.Contains(r.Text, step.reply) {
			t.Errorf("owner's %s: %q", step.cmd, r.Text)
		}
		if rec := inst.container(t, "mine"); rec.State != step.state {
			t.Errorf("after %s: %s", step.cmd, rec.State)
		}
		if last := saved.last(); last != step.state {
			t.Errorf("%s answered before it was saved: the last save saw %q", step.cmd, last)
		}
	}
}

// saves records the state of container "mine" at each Sync (a backup).
type saves struct {
	db     *store.DB
	mu     sync.Mutex
	states []string
}

func (s *saves) Changed() {}

func (s *saves) Sync(ctx context.Context) error {
	var state string
	s.db.QueryRowContext(ctx, `SELECT state FROM containers WHERE name = 'mine'`).Scan(&state)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.states = append(s.states, state)
	return nil
}

func (s *saves) last() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.states) == 0 {
		return ""
	}
	return s.states[len(s.states)-1]
}

// Metering with an injected clock, paid through the real node: the balance
// runs out → paused (the owner is told); a paid topup → running again;
// paused past the retention window → removed. Every balance equals its
// ledger: credits − debits.
func TestMeteringPauseTopupRemove(t *testing.T) {
	relay := testenv.Relay(t)
	imgs := testenv.Images(t)
	dc := testenv.Docker(t)
	inst := startInstance(t, t.TempDir(), []string{relay.URL})
	self := inst.key.PublicKey()
	c := testenv.NewClient(t, relay.URL)
	ctx := context.Background()
	running := func() bool {
		info, err := dc.ContainerInspect(ctx, deployer.RuntimeName(inst.container(t, "metered").ID))
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Running
	}
	tick := func() {
		t.Helper()
		if _, err := inst.in.Deployer.Tick(ctx); err != nil {
			t.Fatal(err)
		}
	}

	inst.deploy(t, c, "deploy "+imgs.Hello.Ref+" hours=1 name=metered", "metered")

	inst.clock.Add(50 * time.Minute)
	tick()
	c.Await(t, self, "metered has 1 sats left") // under the 1 h warning: told once
	inst.clock.Add(11 * time.Minute)
	tick()
	c.Await(t, self, "metered is paused")
	if rec := inst.container(t, "metered"); rec.State != records.StatePaused || rec.BalanceMsat != 0 || running() {
		t.Fatalf("after the balance ran out: %s, %d msat, running %v", rec.State, rec.BalanceMsat, running())
	}

	c.Send(t, "nip04", self, "topup metered 5")
	pay(t, c.Await(t, self, "Invoice for 5 sats to metered").Text)
	c.Await(t, self, "metered is running again")
	if rec := inst.container(t, "metered"); rec.State != records.StateRunning || rec.BalanceMsat != 5000 || !running() {
		t.Fatalf("after the topup: %s, %d msat", rec.State, rec.BalanceMsat)
	}

	inst.clock.Add(31 * time.Minute) // 5 sats buy 30 min
	tick()
	c.Await(t, self, "metered is paused")
	inst.clock.Add(72*time.Hour + time.Minute)
	tick()
	if rec := inst.container(t, "metered"); rec.State != records.StateRemoved {
		t.Fatalf("after the retention window: %s", rec.State)
	}
	if _, err := dc.ContainerInspect(ctx, deployer.RuntimeName(inst.container(t, "metered").ID)); err == nil {
		t.Error("the removed container is still in Docker")
	}

	var credits, debits, balance int64
	inst.db.QueryRow(`SELECT COALESCE(SUM(amount_msat), 0) FROM ledger WHERE kind = 'credit'`).Scan(&credits)
	inst.db.QueryRow(`SELECT COALESCE(SUM(amount_msat), 0) FROM ledger WHERE kind = 'debit'`).Scan(&debits)
	inst.db.QueryRow(`SELECT SUM(balance_msat) FROM containers`).Scan(&balance)
	if credits != 15_000 || credits-debits != balance || balance != 0 {
		t.Errorf("ledger: credits %d − debits %d ≠ balances %d (want 15000 − 15000 = 0)", credits, debits, balance)
	}
}

// BenchmarkSettlementToRunning measures the time from the payer's payment
// settling to the paid container running (the settlement stream, the
// credit, pull of a cached image, create, start, the record), next to
// BenchmarkBareCreateStart: docker create + start of the same image with
// the same limits, what no instance can beat.
func BenchmarkSettlementToRunning(b *testing.B) {
	relay := testenv.Relay(b)
	imgs := testenv.Images(b)
	ln := testenv.Lightning(b)
	inst := startInstanceB(b, relay.URL)
	ctx := context.Background()
	owner := nostr.GeneratePrivateKey()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		q, err := inst.in.Quoter.Quote(ctx, owner, "nip17", nip.Command{Verb: nip.VerbDeploy, Image: imgs.Hello.Ref, Units: 1, Hours: 1, Name: fmt.Sprintf("bench-%d", i)})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ln.Payer.Pay(ctx, q.Invoice.Bolt11); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		// Polled at 1 ms: the measurement's resolution.
		for {
			rec, err := inst.in.Deployer.Records.Get(ctx, q.ContainerID)
			if err != nil {
				b.Fatal(err)
			}
			if rec.State == records.StateRunning {
				break
			}
			if rec.State == records.StateFailed {
				b.Fatalf("launch failed: %s", rec.Reason)
			}
			time.Sleep(time.Millisecond)
		}
		b.StopTimer()
		inst.in.Deployer.Remove(ctx, q.ContainerID, "benchmark")
		b.StartTimer()
	}
}

func BenchmarkBareCreateStart(b *testing.B) {
	imgs := testenv.Images(b)
	testenv.Docker(b)
	ctx := context.Background()
	rt, err := docker.New(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer rt.Close()
	if err := rt.Pull(ctx, imgs.Hello.Ref, nil); err != nil {
		b.Fatal(err)
	}
	for i := 0; b.Loop(); i++ {
		s := deployer.Spec{Name: fmt.Sprintf("enclaved-bench-bare-%d", i), Image: imgs.Hello.Ref,
			Labels:   map[string]string{deployer.LabelID: "bench"},
			NanoCPUs: 250_000_000, MemoryBytes: 64 << 20, Pids: 64}
		id, err := rt.Create(ctx, s)
		if err != nil {
			b.Fatal(err)
		}
		if err := rt.Start(ctx, id); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		rt.Remove(ctx, id)
		b.StartTimer()
	}
}

// Money is never dropped: a payment that arrives after its quote expired
// still credits and deploys; one that finds the instance full stays as
// balance, the renter is told, and the container starts once capacity
// frees up.
func TestLateAndOverCapacityPaymentsAreKept(t *testing.T) {
	relay := testenv.Relay(t)
	imgs := testenv.Images(t)
	inst := startInstance(t, t.TempDir(), []string{relay.URL}, "instance.capacity_units=1")
	self := inst.key.PublicKey()
	ctx := context.Background()
	a, b := testenv.NewClient(t, relay.URL), testenv.NewClient(t, relay.URL)

	a.Send(t, "nip17", self, "deploy "+imgs.Hello.Ref+" name=late")
	quoteA := a.Await(t, self, "Quote")
	b.Send(t, "nip04", self, "deploy "+imgs.Hello.Ref+" name=waiting")
	quoteB := b.Await(t, self, "Quote") // quotes do not reserve capacity

	// The instance's clock passes the quote's expiry; the node's invoice
	// (real time) can still be paid.
	inst.clock.Add(11 * time.Minute)
	if _, err := inst.in.Deployer.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if rec := inst.container(t, "late"); rec.State != records.StateExpired {
		t.Fatalf("unpaid quote after its expiry: %s", rec.State)
	}
	pay(t, quoteA.Text)
	a.Await(t, self, "late is running")

	pay(t, quoteB.Text)
	full := b.Await(t, self, "the instance is full")
	if full.Channel != "nip04" || !strings.Contains(full.Text, "10 sats") {
		t.Errorf("full notice by %s: %q", full.Channel, full.Text)
	}
	if rec := inst.container(t, "waiting"); rec.State != records.StatePaid || rec.BalanceMsat != 10_000 {
		t.Fatalf("over-capacity payment: %s, %d msat", rec.State, rec.BalanceMsat)
	}

	a.Send(t, "nip17", self, "delete late")
	a.Await(t, self, "late is deleted")
	if _, err := inst.in.Deployer.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	b.Await(t, self, "waiting is running")
}

// nitroLike is the dev attestor reporting the Nitro mode, standing in for
// the Nitro Security Module, which cannot run here.
type nitroLike struct{ attest.Attester }

func (nitroLike) Mode() string { return "nitro" }

// The API's dev flag follows the attester, as the events' t tag does: an
// instance attested by Nitro says dev: false, a dev one dev: true.
func TestAPIDevFollowsTheAttester(t *testing.T) {
	relay := testenv.Relay(t)
	for _, tc := range []struct {
		nitro bool
		want  bool
	}{{false, true}, {true, false}} {
		inst := startInstanceWith(t, t.TempDir(), []string{relay.URL}, func(p *enclave.Parts) {
			if tc.nitro {
				p.Attester = nitroLike{p.Attester}
			}
		})
		var info httpapi.Instance
		if code := inst.get(t, "/api/v1/instance", &info); code != http.StatusOK {
			t.Fatalf("GET /api/v1/instance: %d", code)
		}
		if info.Dev != tc.want {
			t.Errorf("attester mode nitro=%v: dev = %v, want %v", tc.nitro, info.Dev, tc.want)
		}
		inst.stop()
	}
}
