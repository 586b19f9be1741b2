package testenv

import (
	"testing"

	"github.com/enclaved/enclaved/internal/devrelay"
)

// Relay starts an in-memory Nostr relay (khatru) on 127.0.0.1 with a random
// port for one test, and stops it when the test ends.
func Relay(tb testing.TB) *devrelay.Relay {
	tb.Helper()
	r, err := devrelay.Start("127.0.0.1:0", "")
	if err != nil {
		tb.Fatalf("relay: %v", err)
	}
	tb.Cleanup(func() { r.Close() })
	return r
}
