package deployer

import (
	"context"
	"testing"
	"time"

	"github.com/enclaved/enclaved/records"
)

// A slow pull is reported to the renter: not in its first 10 s, then at
// most every 30 s.
func TestSlowPullProgressNotices(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	var notices []Event
	d := New(nil, nil, Config{}, func() time.Time { return now }, nil)
	d.OnEvent = append(d.OnEvent, func(_ context.Context, ev Event) { notices = append(notices, ev) })
	progress := d.pullProgress(context.Background(), records.Record{ID: "x", Name: "web", Owner: "o", Channel: "nip17"})
	for _, step := range []struct {
		after time.Duration
		want  int
	}{{0, 0}, {9 * time.Second, 0}, {11 * time.Second, 1}, {20 * time.Second, 1}, {40 * time.Second, 1}, {42 * time.Second, 2}} {
		now = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC).Add(step.after)
		progress("Downloading")
		if len(notices) != step.want {
			t.Fatalf("after %s: %d notices, want %d", step.after, len(notices), step.want)
		}
	}
	// The bot words it (bot.TestEventText): web: still pulling the image
	// (Downloading, 11s so far).
	if n, ok := notices[0].(Pulling); !ok || n.Rec.Owner != "o" || n.Rec.Channel != "nip17" || n.Status != "Downloading" || n.Elapsed != 11*time.Second {
		t.Errorf("notice %+v", notices[0])
	}
}
