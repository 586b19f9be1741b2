package testenv

import (
	"context"
	"crypto/rand"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// GatedRegistry is the shared local registry behind a gate of the test's:
// while it is held, every request for an image (manifests and blobs)
// waits, so a pull through it lasts as long as the test wants: a slow
// registry, seen from the instance.
type GatedRegistry struct {
	// Host is host:port, the prefix of its image references.
	Host string

	mu      sync.Mutex
	open    chan struct{} // closed while the gate is open
	waiting chan struct{} // receives when a request starts waiting
}

// NewGatedRegistry starts a gated registry on 127.0.0.1 for this test,
// with its gate open.
func NewGatedRegistry(tb testing.TB) *GatedRegistry {
	tb.Helper()
	reg := Registry(tb)
	target, _ := url.Parse("http://" + reg.Host)
	g := &GatedRegistry{open: make(chan struct{}), waiting: make(chan struct{}, 64)}
	close(g.open)
	proxy := httputil.NewSingleHostReverseProxy(target)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	g.Host = ln.Addr().String()
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v2/" && strings.HasPrefix(r.URL.Path, "/v2/") && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			g.mu.Lock()
			open := g.open
			g.mu.Unlock()
			select {
			case <-open:
			default:
				select {
				case g.waiting <- struct{}{}:
				default:
				}
				select {
				case <-open:
				case <-r.Context().Done():
					return
				}
			}
		}
		proxy.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	tb.Cleanup(func() {
		g.Release()
		srv.Close()
	})
	return g
}

// Hold closes the gate: requests for images wait from now on.
func (g *GatedRegistry) Hold() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.open:
		g.open = make(chan struct{})
	default:
	}
}

// Release opens the gate: waiting requests go on.
func (g *GatedRegistry) Release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.open:
	default:
		close(g.open)
	}
}

// Waiting receives each time a request starts waiting at the gate: a pull
// is under way and held.
func (g *GatedRegistry) Waiting() <-chan struct{} { return g.waiting }

// PushUnique pushes an image no engine has seen (a FROM-scratch image of
// the hello program with a random file beside it) through the gate as
// enclaved-test/NAME, so pulling it must reach the registry.
func (g *GatedRegistry) PushUnique(tb testing.TB, name string) Image {
	tb.Helper()
	body, err := program(context.Background(), "hello")
	if err != nil {
		tb.Fatal(err)
	}
	nonce := make([]byte, 16)
	rand.Read(nonce)
	cfg := v1.Config{Entrypoint: imageSpecs["hello"].Entrypoint, ExposedPorts: imageSpecs["hello"].ExposedPorts}
	img, err := ScratchImage(map[string][]byte{"hello": body, "nonce": nonce}, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	pushed, err := Push(context.Background(), g.Host+"/enclaved-test/"+name+":latest", img)
	if err != nil {
		tb.Fatal(err)
	}
	return pushed
}
