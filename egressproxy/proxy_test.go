package egressproxy_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enclaved/enclaved/egress"

	"github.com/enclaved/enclaved/egressproxy"
	"github.com/enclaved/enclaved/internal/testenv"
	"github.com/enclaved/enclaved/link"
	"github.com/enclaved/enclaved/link/linknet"
	"github.com/enclaved/enclaved/parent"
	"github.com/enclaved/enclaved/tunnel"
)

// world is a parent on 127.0.0.1 serving an enclave's link, and an echo
// server the parent can reach. The enclave's egress maps the test's host
// names to the echo server, as DNS would at the parent.
type world struct {
	egress *tunnel.Egress
	echo   string
	logs   *testenv.SyncBuffer
	dials  func() int
}

// echoServer echoes TCP on 127.0.0.1; dials counts its connections.
func echoServer(t testing.TB) (addr string, dials func() int) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { echo.Close() })
	var mu sync.Mutex
	n := 0
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			n++
			mu.Unlock()
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	return echo.Addr().String(), func() int { mu.Lock(); defer mu.Unlock(); return n }
}

// newWorld starts a parent unless linkAddr names one, and an echo server
// unless echo names one (then dials is nil).
func newWorld(t testing.TB, linkAddr, echo string, operatorPolicy ...string) *world {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	w := &world{echo: echo, logs: &testenv.SyncBuffer{}}
	if echo == "" {
		w.echo, w.dials = echoServer(t)
	}
	if linkAddr == "" {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		linkAddr = l.Addr().String()
		srv := &parent.Server{BlobDir: t.TempDir()}
		go srv.Serve(ctx, l)
	}
	keeper := &link.Keeper{Dial: func(ctx context.Context) (net.Conn, error) { return linknet.DialAddr(ctx, linkAddr) }}
	go keeper.Run(ctx)
	w.egress = &tunnel.Egress{Link: keeper, Allow: operatorPolicy, Log: slog.New(slog.NewTextHandler(w.logs, nil))}
	return w
}

// dial is the proxy's dialer: the operator's policy is checked by the
// egress with the real name, then the name is resolved to the echo
// server, as the parent's resolver would.
func (w *world) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if !egress.Allowed(w.egress.Allow, addr) {
		return w.egress.DialContext(ctx, network, addr) // refused and logged
	}
	return w.egress.DialContext(ctx, network, w.echo)
}

func (w *world) proxy(t testing.TB, allow ...string) *egressproxy.Proxy {
	t.Helper()
	plan, err := egress.NewPlan(allow)
	if err != nil {
		t.Fatal(err)
	}
	w.egress.Allow = append(w.egress.Allow, w.echo)
	return &egressproxy.Proxy{Container: "web", Plan: plan, Dial: w.dial, Log: slog.New(slog.NewTextHandler(w.logs, nil))}
}

// roundTrip writes ping on c and reads what comes back until EOF.
func roundTrip(t *testing.T, c net.Conn) string {
	t.Helper()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		return "write: " + err.Error()
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	b, err := io.ReadAll(c)
	if err != nil && !strings.Contains(err.Error(), "reset") {
		return "read: " + err.Error()
	}
	return string(b)
}

// The proxy's policy and tunnel with explicit destinations, as a
// CONNECT-style dial gives them: the connection the container asked for
// reaches its host through the parent; another address, another port and
// a host outside the operator's policy are refused, and each refusal is
// logged.
func TestProxyPolicy(t *testing.T) {
	w := newWorld(t, "", "", "api.example.com:443")
	p := w.proxy(t, "api.example.com", "blocked.example.com")
	cases := []struct {
		dst, want, log string
	}{
		{"198.18.0.1:443", "ping", "container egress"},
		{"198.18.0.1:80", "", "not allowed (port 80)"},
		{"198.18.0.7:443", "", "not a host this container asked for"},
		{"93.184.216.34:443", "", "not a host this container asked for"},
		{"198.18.0.2:443", "", "egress to blocked.example.com:443 is not allowed"},
	}
	for _, c := range cases {
		before := w.dials()
		in, out := tcpPair(t)
		go p.Handle(context.Background(), out, netip.MustParseAddrPort(c.dst))
		if got := roundTrip(t, in); got != c.want {
			t.Errorf("%s: got %q, want %q", c.dst, got, c.want)
		}
		if reached := w.dials() > before; reached != (c.want != "") {
			t.Errorf("%s: reached the server: %v", c.dst, reached)
		}
		if !strings.Contains(w.logs.String(), c.log) {
			t.Errorf("%s: log has no %q:\n%s", c.dst, c.log, w.logs)
		}
	}
}

func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	a, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// A connection that was not redirected has no original destination, and
// Serve refuses it rather than guessing.
func TestServeNeedsRedirect(t *testing.T) {
	w := newWorld(t, "", "", "api.example.com:443")
	p := w.proxy(t, "api.example.com")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- p.Serve(ctx, l) }()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if got := roundTrip(t, c); got != "" {
		t.Errorf("an unredirected connection got %q", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if w.dials() != 0 {
		t.Error("the server was reached")
	}
}

// Throughput of a container's connection through its proxy and the
// parent's egress, against the same echo server dialed directly.
func BenchmarkProxy(b *testing.B) {
	w := newWorld(b, "", "", "api.example.com:443")
	p := w.proxy(b, "api.example.com")
	chunk := make([]byte, 32<<10)
	for _, mode := range []string{"proxy", "direct"} {
		b.Run(mode, func(b *testing.B) {
			var c net.Conn
			if mode == "proxy" {
				in, out := tcpPairB(b)
				go p.Handle(context.Background(), out, netip.MustParseAddrPort("198.18.0.1:443"))
				c = in
			} else {
				var err error
				if c, err = net.Dial("tcp", w.echo); err != nil {
					b.Fatal(err)
				}
			}
			defer c.Close()
			go func() {
				for range b.N {
					if _, err := c.Write(chunk); err != nil {
						return
					}
				}
			}()
			b.SetBytes(int64(len(chunk)))
			b.ResetTimer()
			if _, err := io.CopyN(io.Discard, c, int64(b.N*len(chunk))); err != nil {
				b.Fatal(err)
			}
		})
	}
}

func tcpPairB(b *testing.B) (net.Conn, net.Conn) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	a, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	c, err := l.Accept()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { a.Close(); c.Close() })
	return a, c
}
