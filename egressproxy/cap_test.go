package egressproxy_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/enclaved/enclaved/egressproxy"
	"github.com/enclaved/enclaved/internal/testenv"
)

// A container holds at most DefaultMaxConns connections through its proxy:
// with that many open to its allowed host, one more is refused (closed
// before anything is dialed) and logged naming the container and the cap;
// another container's proxy is not affected; closing one frees a place.
func TestProxyConnectionCap(t *testing.T) {
	w := newWorld(t, "", "", "api.example.com:443")
	p := w.proxy(t, "api.example.com")
	other := w.proxy(t, "api.example.com")
	other.Container = "other"
	dst := netip.MustParseAddrPort("198.18.0.1:443")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	connect := func(p *egressproxy.Proxy) net.Conn {
		in, out := tcpPair(t)
		go p.Handle(ctx, out, dst)
		return in
	}
	var held []net.Conn
	for i := range egressproxy.DefaultMaxConns {
		c := connect(p)
		c.SetDeadline(time.Now().Add(20 * time.Second))
		c.Write([]byte("ping"))
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		held = append(held, c)
	}
	dials := w.dials()
	if got := roundTrip(t, connect(p)); got != "" {
		t.Errorf("one connection over the cap got %q", got)
	}
	if w.dials() != dials {
		t.Error("the connection over the cap was dialed")
	}
	want := fmt.Sprintf("container egress refused: too many connections\" container=web to=198.18.0.1:443 at_most=%d", egressproxy.DefaultMaxConns)
	if !strings.Contains(w.logs.String(), want) {
		t.Errorf("the log has no %q:\n%s", want, w.logs)
	}
	if got := roundTrip(t, connect(other)); got != "ping" {
		t.Errorf("another container's connection got %q", got)
	}
	held[0].Close()
	testenv.Eventually(t, 20*time.Second, "a place freed by a closed connection", func() bool {
		return roundTrip(t, connect(p)) == "ping"
	})
}
