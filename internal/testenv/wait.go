package testenv

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/enclaved/enclaved/internal/proc"
)

// waitOK waits until url answers 200 OK, within timeout, while p runs.
func waitOK(url string, timeout time.Duration, p *proc.Proc) error {
	return proc.WaitFor(context.Background(), url, timeout, func(ctx context.Context) (bool, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	}, p)
}

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
