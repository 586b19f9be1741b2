package ratelog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// A burst gives one line; once the interval has passed, the next line says
// how many were skipped.
func TestWarner(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	w := &Warner{Every: time.Hour}
	for range 100 {
		w.Warn(log, "refused", "why", "full")
	}
	if n := strings.Count(buf.String(), "refused"); n != 1 {
		t.Fatalf("%d lines for a burst of 100 within the interval:\n%s", n, buf.String())
	}
	w.mu.Lock()
	w.next = time.Time{} // the interval has passed
	w.mu.Unlock()
	w.Warn(log, "refused", "why", "full")
	if !strings.Contains(buf.String(), "skipped=99") {
		t.Errorf("the second line does not count the skipped ones:\n%s", buf.String())
	}
	w.Warn(nil, "nothing") // a nil logger is ignored
}
