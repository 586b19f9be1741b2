package images_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/enclaved/enclaved/images"
)

// hostileRegistry is a registry of an attacker's on 127.0.0.1: endless,
// oversized, slow and looping answers, and a config blob of 300 MiB.
type hostileRegistry struct {
	host            string
	inFlight, peak  atomic.Int64
	configRequested atomic.Bool
}

func newHostileRegistry(t *testing.T) *hostileRegistry {
	t.Helper()
	h := &hostileRegistry{}
	const manifestType = "application/vnd.oci.image.manifest.v1+json"
	endless := func(w http.ResponseWriter, r *http.Request) {
		chunk := []byte(strings.Repeat(" ", 32<<10))
		for r.Context().Err() == nil {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/v2/", func(w http.ResponseWriter, r *http.Request) {
		n := h.inFlight.Add(1)
		defer h.inFlight.Add(-1)
		for p := h.peak.Load(); n > p && !h.peak.CompareAndSwap(p, n); p = h.peak.Load() {
		}
		path := strings.TrimPrefix(r.URL.Path, "/v2/")
		switch {
		case path == "":
			w.WriteHeader(http.StatusOK)
		case strings.HasPrefix(path, "endless/manifests/"):
			w.Header().Set("Content-Type", manifestType)
			endless(w, r)
		case strings.HasPrefix(path, "declared/manifests/"):
			w.Header().Set("Content-Type", manifestType)
			w.Header().Set("Content-Length", fmt.Sprint(1<<30))
			w.WriteHeader(http.StatusOK)
		case strings.HasPrefix(path, "slow/manifests/"):
			w.Header().Set("Content-Type", manifestType)
			w.WriteHeader(http.StatusOK)
			w.Write([]byte("{"))
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		case strings.HasPrefix(path, "loop/manifests/"):
			http.Redirect(w, r, r.URL.Path, http.StatusFound)
		case strings.HasPrefix(path, "bigconfig/manifests/"):
			w.Header().Set("Content-Type", manifestType)
			fmt.Fprintf(w, `{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":%d,"digest":"sha256:%s"},"layers":[]}`,
				manifestType, 300<<20, strings.Repeat("a", 64))
		case strings.HasPrefix(path, "bigconfig/blobs/"):
			h.configRequested.Store(true)
			endless(w, r)
		case strings.HasPrefix(path, "wrongdigest/manifests/"):
			w.Header().Set("Content-Type", manifestType)
			fmt.Fprintf(w, `{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":2,"digest":"sha256:%s"},"layers":[]}`,
				manifestType, strings.Repeat("b", 64))
		default:
			http.NotFound(w, r)
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	h.host = ln.Addr().String()
	return h
}

// allocated is the bytes this process allocated so far.
func allocated() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.TotalAlloc
}

// rss is a /proc/self/status field in KiB (VmRSS now, VmHWM the peak).
func rss(field string) int64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// A hostile registry gets a clear refusal, quickly, and never makes the
// instance read more than MaxRegistryBody of any answer: endless and
// oversized manifests, a 300 MiB config blob, a body that never ends, a
// redirect loop, a manifest that is not what its digest says.
func TestHostileRegistryIsRefused(t *testing.T) {
	h := newHostileRegistry(t)
	var r images.Resolver
	for _, tc := range []struct{ repo, want string }{
		{"endless:latest", "sent a registry answer over 4 MiB; refused"},
		{"declared:latest", "sent a registry answer over 4 MiB; refused"},
		{"bigconfig:latest", "sent a registry answer over 4 MiB; refused"},
		{"slow:latest", "did not answer in time"},
		{"loop:latest", "redirects"},
		{"wrongdigest@sha256:" + strings.Repeat("c", 64), "cannot read image"},
	} {
		ref := h.host + "/" + tc.repo
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		before := allocated()
		_, err := r.Resolve(ctx, ref)
		cancel()
		grew := allocated() - before
		var ie *images.ImageError
		if err == nil || !errors.As(err, &ie) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an ImageError containing %q", tc.repo, err, tc.want)
		}
		if grew > 64<<20 {
			t.Errorf("%s: resolving allocated %d MiB", tc.repo, grew>>20)
		}
		t.Logf("%s: refused, %.1f MiB allocated; process RSS %d MiB, peak %d MiB", tc.repo, float64(grew)/(1<<20), rss("VmRSS")>>10, rss("VmHWM")>>10)
	}
	if !h.configRequested.Load() {
		t.Error("the 300 MiB config blob was never asked for: the test did not reach it")
	}
}

// Resolves hold at most MaxResolves conversations with registries at once;
// the rest wait their turn within their deadline and are told the
// instance is busy.
func TestResolvesAreBounded(t *testing.T) {
	h := newHostileRegistry(t)
	var r images.Resolver
	var wg sync.WaitGroup
	var busy atomic.Int64
	for range 3 * images.MaxResolves {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, err := r.Resolve(ctx, h.host+"/slow:latest")
			if err != nil && strings.Contains(err.Error(), "busy") {
				busy.Add(1)
			}
		})
	}
	wg.Wait()
	if p := h.peak.Load(); p > images.MaxResolves {
		t.Errorf("%d registry requests at once, want at most %d", p, images.MaxResolves)
	}
	if busy.Load() == 0 {
		t.Error("no resolve was told the instance is busy")
	}
}
