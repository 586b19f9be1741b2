package testenv

import (
	"testing"
	"time"
)

// Eventually checks cond every 20 ms until it holds, failing the test if
// it does not within timeout (a bound, not a timing assertion).
func Eventually(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("waited %s for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
