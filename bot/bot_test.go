package bot

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/billing"
	"github.com/enclaved/enclaved/deployer"
	"github.com/enclaved/enclaved/internal/testenv"
	"github.com/enclaved/enclaved/nip"
	"github.com/enclaved/enclaved/store"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func TestLimiter(t *testing.T) {
	l := newLimiter(3, time.Minute)
	t0 := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	var got []verdict
	for i := range 6 {
		got = append(got, l.allow("alice", t0.Add(time.Duration(i)*time.Second)))
	}
	want := []verdict{allow, allow, allow, warn, refuse, refuse}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("verdicts %v, want %v", got, want)
		}
	}
	if l.allow("bob", t0) != allow {
		t.Error("another pubkey was limited")
	}
	if l.allow("alice", t0.Add(time.Minute)) != allow {
		t.Error("a new window did not reset the count")
	}
}

func TestDMRelaysKeepsValidRelaysOnly(t *testing.T) {
	evt := &nostr.Event{Kind: nostr.KindDMRelayList, Tags: nostr.Tags{
		{"relay", "wss://a.example"}, {"relay", "https://not-a-relay.example"}, {"relay"}, {"r", "wss://wrong-tag.example"},
		{"relay", "ws://127.0.0.1:7447"}, {"relay", "wss://c.example"}, {"relay", "wss://d.example"},
	}}
	got := strings.Join(DMRelays(evt), " ")
	if want := "wss://a.example ws://127.0.0.1:7447 wss://c.example"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// newBot is a bot on a real database and the relay at url; its deployer
// has no runtime, so only commands that read the database work.
func newBot(tb testing.TB, url string) (*Bot, *nip.LocalKeys) {
	tb.Helper()
	db, err := store.Open(context.Background(), filepath.Join(tb.TempDir(), "enclaved.db"), store.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	keys, err := nip.NewLocalKeys(nostr.GeneratePrivateKey())
	if err != nil {
		tb.Fatal(err)
	}
	d := deployer.New(db, nil, deployer.Config{CapacityUnits: 4}, time.Now, nil)
	bt, err := New(keys, db, d, &billing.Quoter{Records: d.Records, Now: time.Now}, Config{Relays: []string{url}, Rate: 1 << 30}, time.Now, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { bt.pool.Close("done") })
	return bt, keys
}

// BenchmarkHandleDM is the instance's cost per DM: dedupe in SQLite,
// decryption, the command (status, a database read) and the encrypted
// reply published to a local relay.
func BenchmarkHandleDM(b *testing.B) {
	for _, ch := range []nip.Channel{nip.ChannelNIP17, nip.ChannelNIP04} {
		b.Run(string(ch), func(b *testing.B) {
			bt, _ := newBot(b, testenv.Relay(b).URL)
			sender, err := nip.NewLocalKeys(nostr.GeneratePrivateKey())
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			evts := make([]nostr.Event, b.N)
			for i := range evts {
				// Distinct texts: one command each.
				evts[i], _, err = nip.DM(ctx, sender, ch, bt.self, "status"+strings.Repeat(" ", i%50)+"\t"+strings.Repeat(" ", i/50), nostr.Now())
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for i := range evts {
				bt.Handle(ctx, &evts[i])
			}
		})
	}
}
