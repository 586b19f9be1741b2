package testenv

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/enclaved/enclaved/internal/proc"
)

// The Prometheus tools are Debian's prometheus package.
const promMissing = "not installed: run scripts/install-deps.sh (apt-get install prometheus)"

// Scrape fetches url (a metrics endpoint) and returns its body, failing
// the test unless it answers 200.
func Scrape(tb testing.TB, url string) []byte {
	tb.Helper()
	resp, err := http.Get(url)
	if err != nil {
		tb.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		tb.Fatalf("scrape %s: %s %v\n%s", url, resp.Status, err, b)
	}
	return b
}

// PromtoolCheck runs `promtool check metrics` (Prometheus's own linter of
// the text format) on an exposition and fails the test on any problem it
// reports.
func PromtoolCheck(tb testing.TB, exposition []byte) {
	tb.Helper()
	bin, err := exec.LookPath("promtool")
	if err != nil {
		tb.Fatalf("promtool %s", promMissing)
	}
	cmd := exec.Command(bin, "check", "metrics")
	cmd.Stdin = bytes.NewReader(exposition)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		tb.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

// PrometheusServer is a real Prometheus server on 127.0.0.1 scraping its
// targets every second, its data in a temporary directory.
type PrometheusServer struct {
	URL  string // http://127.0.0.1:PORT
	proc *proc.Proc
}

// Prometheus starts Debian's prometheus scraping targets (host:port, path
// /metrics) for one test, and returns once it is ready; it is killed when
// the test ends. A missing binary fails the test.
func Prometheus(tb testing.TB, targets ...string) *PrometheusServer {
	tb.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		tb.Fatalf("prometheus %s", promMissing)
	}
	dir := tb.TempDir()
	quoted := make([]string, len(targets))
	for i, t := range targets {
		quoted[i] = strconv.Quote(t)
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: enclaved
    static_configs:
      - targets: [%s]
`, strings.Join(quoted, ", "))
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o600); err != nil {
		tb.Fatal(err)
	}
	port, err := proc.FreePort()
	if err != nil {
		tb.Fatal(err)
	}
	p, err := proc.Start("prometheus", dir, bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port),
		"--log.level=warn")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(p.Kill)
	s := &PrometheusServer{URL: fmt.Sprintf("http://127.0.0.1:%d", port), proc: p}
	err = waitOK(s.URL+"/-/ready", 30*time.Second, p)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// Query evaluates expr now through the HTTP query API (/api/v1/query) and
// returns the value of its one sample; ok is false when it has none.
func (s *PrometheusServer) Query(tb testing.TB, expr string) (v float64, ok bool) {
	tb.Helper()
	resp, err := http.Get(s.URL + "/api/v1/query?query=" + url.QueryEscape(expr))
	if err != nil {
		tb.Fatalf("query %s: %v", expr, err)
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || r.Status != "success" {
		tb.Fatalf("query %s: %s %v %s", expr, resp.Status, err, r.Error)
	}
	switch n := len(r.Data.Result); {
	case r.Data.ResultType != "vector":
		tb.Fatalf("query %s: a %s, not a vector", expr, r.Data.ResultType)
	case n == 0:
		return 0, false
	case n > 1:
		tb.Fatalf("query %s: %d samples, want one: %v", expr, n, r.Data.Result)
	}
	text, _ := r.Data.Result[0].Value[1].(string)
	if v, err = strconv.ParseFloat(text, 64); err != nil {
		tb.Fatalf("query %s: value %q: %v", expr, text, err)
	}
	return v, true
}

// Await polls expr until its value is want (the scrapes are a second
// apart), failing the test with the last value after timeout.
func (s *PrometheusServer) Await(tb testing.TB, timeout time.Duration, expr string, want float64) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		v, ok := s.Query(tb, expr)
		if ok && v == want {
			return
		}
		if err := s.proc.Dead(); err != nil {
			tb.Fatal(err)
		}
		if time.Now().After(deadline) {
			if !ok {
				tb.Fatalf("after %s, %s has no sample; want %g", timeout, expr, want)
			}
			tb.Fatalf("after %s, %s = %g; want %g", timeout, expr, v, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
