package deployer

import (
	"context"
	"testing"
	"time"
)

// A slow pull is reported to the renter: not in its first 10 s, then at
// most every 30 s.
func TestSlowPullProgressNotices(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	var notices []Notice
	d := New(nil, nil, Config{}, func() time.Time { return now }, nil, func(_ context.Context, n Notice) { notices = append(notices, n) })
	progress := d.pullProgress(context.Background(), Record{ID: "x", Name: "web", Owner: "o", Channel: "nip17"})
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
	if n := notices[0]; n.Owner != "o" || n.Channel != "nip17" || n.Text != "web: still pulling the image (Downloading, 11s so far)" {
		t.Errorf("notice %+v", n)
	}
}
