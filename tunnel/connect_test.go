package tunnel_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/enclaved/enclaved/tunnel"
)

// dockerd's way out of the enclave: CONNECT to an allowed registry is
// tunnelled through the parent; a denied one gets 403 with the reason and
// is never dialed; anything but CONNECT is refused.
func TestConnectProxy(t *testing.T) {
	w := newWorld(t)
	allowed, _ := server(t)
	denied, deniedHits := server(t)
	e := w.egress(allowed)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go tunnel.ServeConnect(ctx, l, &tunnel.ConnectProxy{Dial: e.DialContext})

	// connect returns the response and the connection, read through the
	// reader that read the response (which may already hold echoed bytes).
	connect := func(req string) (*http.Response, *tunnelConn) {
		t.Helper()
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(20 * time.Second))
		io.WriteString(c, req)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%q: %v", req, err)
		}
		return resp, &tunnelConn{Conn: c, r: br}
	}

	resp, c := connect("CONNECT " + allowed + " HTTP/1.1\r\nHost: " + allowed + "\r\n\r\nearly bytes|")
	if resp.StatusCode != 200 {
		t.Fatalf("allowed CONNECT: %s", resp.Status)
	}
	io.WriteString(c, "after")
	c.Conn.(*net.TCPConn).CloseWrite()
	got, _ := io.ReadAll(c)
	if string(got) != "early bytes|after" {
		t.Errorf("tunnel echoed %q", got)
	}

	resp, _ = connect("CONNECT " + denied + " HTTP/1.1\r\nHost: " + denied + "\r\n\r\n")
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 403 || !strings.Contains(string(body), "egress to "+denied+" is not allowed") {
		t.Errorf("denied CONNECT: %s %q", resp.Status, body)
	}
	if deniedHits.Load() != 0 {
		t.Error("the denied host was dialed")
	}
	resp, _ = connect("GET http://" + allowed + "/ HTTP/1.1\r\nHost: " + allowed + "\r\n\r\n")
	if resp.StatusCode != 405 {
		t.Errorf("GET through the proxy: %s", resp.Status)
	}
	resp, _ = connect("CONNECT nohostport HTTP/1.1\r\nHost: nohostport\r\n\r\n")
	if resp.StatusCode != 400 {
		t.Errorf("CONNECT without a port: %s", resp.Status)
	}
}

// tunnelConn reads through the buffer that read the proxy's response.
type tunnelConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *tunnelConn) Read(p []byte) (int, error) { return c.r.Read(p) }
