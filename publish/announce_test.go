package publish

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"
)

type fixedInstance struct{}

func (fixedInstance) FreeUnits(context.Context) (int64, error) { return 1, nil }
func (fixedInstance) TEERoot(context.Context) (string, error)  { return "root", nil }
func (fixedInstance) Announcement(context.Context) (nostr.Event, error) {
	return nostr.Event{Kind: 13793}, nil
}

// flaky fails its first publications, then reports each one that a relay took.
type flaky struct {
	fails int
	took  chan nostr.Event
}

func (f *flaky) Publish(_ context.Context, evt nostr.Event, _ []string) error {
	if f.fails > 0 {
		f.fails--
		return errors.New("no relay took it")
	}
	f.took <- evt
	return nil
}

// An announcement no relay took is tried again within seconds (1 s, then
// 2 s, …), not at the next minute's check: an instance that starts while
// its relay is slow is listed at once.
func TestAnnouncementRetriedSoonAfterAFailure(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := &flaky{fails: 2, took: make(chan nostr.Event, 1)}
	a := &Announcer{Instance: fixedInstance{}, Publisher: p, Now: time.Now, Log: slog.New(slog.DiscardHandler)}
	go a.Run(ctx)
	select {
	case evt := <-p.took:
		if evt.Kind != 13793 {
			t.Fatalf("published kind %d", evt.Kind)
		}
	case <-time.After(AnnounceCheck / 2): // a bound: the retries take 3 s
		t.Fatal("a failed announcement was not tried again before the next check")
	}
}
