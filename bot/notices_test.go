package bot

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/enclaved/enclaved/deployer"
	"github.com/enclaved/enclaved/records"
)

// The deployer says what happened; owners read it in these words.
func TestEventText(t *testing.T) {
	rec := records.Record{Name: "web", Units: 1, PriceMsat: 3_600_000, BalanceMsat: 21_000, ImageRef: "img@sha256:00"}
	at := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		ev   deployer.Event
		want string
	}{
		{deployer.Pulling{Of: deployer.Of{Rec: rec}, Status: "Downloading", Elapsed: 11 * time.Second},
			"web: still pulling the image (Downloading, 11s so far)"},
		{deployer.Failed{Of: deployer.Of{Rec: rec}, Step: "pull"},
			"web could not be started (pull). Its balance of 21 sats is kept; send `start web` to retry."},
		{deployer.Paused{Of: deployer.Of{Rec: rec}, RetainUntil: at},
			"web is paused: its balance is used up. Its data is kept until 2026-11-21T12:00:00Z; send `topup web <sats>` or zap it to resume."},
		{deployer.Expired{Of: deployer.Of{Rec: rec}, Was: "paused", Retention: 72 * time.Hour},
			"web was removed: it stayed paused past the retention window (3 days)."},
		{deployer.VolumesNotSaved{Of: deployer.Of{Rec: rec}, Err: os.ErrDeadlineExceeded},
			"web: its volumes were not backed up: copying them took longer than a backup allows. No backup holds them"},
		{deployer.VolumesNotSaved{Of: deployer.Of{Rec: rec}, Err: errors.New("parent: disk full"), Kept: at},
			"the copy failed (the instance's log says why). The backup keeps their copy of 2026-11-21 12:00 UTC"},
		{deployer.Running{Of: deployer.Of{Rec: rec}}, "web is running."},
	} {
		got := EventText(tc.ev, records.Unit{NanoCPUs: 1e9, MemoryBytes: 64 << 20, Pids: 32}, deployer.Links{})
		if !strings.Contains(got, tc.want) {
			t.Errorf("%T: %q, want %q", tc.ev, got, tc.want)
		}
		if strings.Contains(got, "disk full") {
			t.Errorf("%T: the parent's words reach the owner: %q", tc.ev, got)
		}
	}
}
