package enclave_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/enclaved/enclaved/enclave"
	"github.com/enclaved/enclaved/internal/testenv"
	"github.com/enclaved/enclaved/parent"
	"github.com/enclaved/enclaved/tunnel"
)

// hello answers every request with "hello".
var hello = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") })

// publicPort is the production path of the instance's public port: a
// parent forwarding a TCP listener on 127.0.0.1 into the enclave's ingress
// over the link (TCP standing in for vsock), and the instance's HTTP
// server (enclave.NewHTTPServer) within lim on the enclave's side. It
// returns the public address and the log both sides write.
func publicPort(t *testing.T, lim enclave.HTTPLimits, h http.Handler) (string, *testenv.SyncBuffer) {
	t.Helper()
	logs := &testenv.SyncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	srv := &parent.Server{BlobDir: t.TempDir(), Log: log.With("side", "parent")}
	ingress := tunnel.NewIngress(443)
	testenv.ParentLink(t, srv, ingress.Handle)
	public, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go srv.Forward(ctx, public, 443)
	hs, l := enclave.NewHTTPServer(h, ingress.Listener(443), nil, lim, log.With("side", "enclave"))
	go hs.Serve(l)
	t.Cleanup(func() { hs.Close() })
	// The link is up once a request goes through.
	testenv.Eventually(t, 20*time.Second, "the public port to answer", func() bool {
		resp, err := http.Get("http://" + public.Addr().String() + "/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return public.Addr().String(), logs
}

// closedByServer reads c until the server closes it; it says what went
// wrong if the server sent anything first or kept it open for 30 s (a
// bound, not a timing assertion).
func closedByServer(c net.Conn) error {
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	b, err := io.ReadAll(c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return errors.New("still open after 30 s")
	}
	if len(b) > 0 {
		return fmt.Errorf("the server sent %q before closing", b)
	}
	return nil
}

// get sends a GET on c (kept alive) and returns the response's status.
func get(t *testing.T, c net.Conn, br *bufio.Reader) int {
	t.Helper()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatalf("GET: %v", err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// Through the parent's forwarded port, a connection that sends nothing,
// one that sends its headers a line at a time (slowloris) and a kept-alive
// one left idle after its request are all closed by the server's
// timeouts (injected short here; the instance's are 10 s and 1 min).
func TestHTTPServerClosesIdleAndSlowClients(t *testing.T) {
	lim := enclave.DefaultHTTPLimits()
	lim.ReadHeaderTimeout, lim.IdleTimeout = 300*time.Millisecond, 300*time.Millisecond
	addr, _ := publicPort(t, lim, hello)

	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if err := closedByServer(idle); err != nil {
		t.Errorf("a connection that sends nothing: %v", err)
	}

	slow, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	closed := make(chan error)
	go func() { closed <- closedByServer(slow) }()
	io.WriteString(slow, "GET / HTTP/1.1\r\nHost: x\r\n")
	tick := time.NewTicker(20 * time.Millisecond) // the attacker's pace
	defer tick.Stop()
	lines := 0
	for done := false; !done; {
		select {
		case err := <-closed:
			if err != nil {
				t.Errorf("a slowloris: %v", err)
			}
			done = true
		case <-tick.C:
			fmt.Fprintf(slow, "X-Slow-%d: a\r\n", lines) // an error once closed: ignored
			lines++
		}
	}
	t.Logf("the slowloris sent %d header lines before it was closed", lines)

	kept, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer kept.Close()
	if code := get(t, kept, bufio.NewReader(kept)); code != 200 {
		t.Fatalf("GET: %d", code)
	}
	if err := closedByServer(kept); err != nil {
		t.Errorf("a kept-alive connection left idle: %v", err)
	}
}

// Headers over MaxHeaderBytes (64 KiB) get 431; headers under it, such as
// a large cookie, are served.
func TestHTTPServerOversizedHeader(t *testing.T) {
	addr, _ := publicPort(t, enclave.DefaultHTTPLimits(), hello)
	status := func(header int) string {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		go fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\nCookie: %s\r\n\r\n", strings.Repeat("a", header))
		line, _ := bufio.NewReader(c).ReadString('\n')
		return strings.TrimSpace(line)
	}
	if got := status(100 << 10); got != "HTTP/1.1 431 Request Header Fields Too Large" {
		t.Errorf("a 100 KiB header: %q", got)
	}
	if got := status(32 << 10); got != "HTTP/1.1 200 OK" {
		t.Errorf("a 32 KiB header: %q", got)
	}
}

// With MaxConns connections open, one more is closed at once, unanswered,
// and the refusal is logged with the cap; a connection that closes frees
// its place.
func TestHTTPServerConnectionCap(t *testing.T) {
	lim := enclave.DefaultHTTPLimits()
	lim.MaxConns = 3
	addr, logs := publicPort(t, lim, hello)
	var held []net.Conn
	// The connection publicPort checked with may still be open (kept
	// alive by the client): the first requests wait for their places.
	for len(held) < lim.MaxConns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		br := bufio.NewReader(c)
		if resp, err := http.ReadResponse(br, nil); err == nil && resp.StatusCode == 200 {
			io.Copy(io.Discard, resp.Body)
			held = append(held, c) // open, kept alive
		} else {
			http.DefaultClient.CloseIdleConnections()
		}
	}
	extra, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	io.WriteString(extra, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if err := closedByServer(extra); err != nil {
		t.Errorf("a connection over the cap: %v", err)
	}
	if want := "HTTP connection refused: too many connections\" side=enclave at_most=3"; !strings.Contains(logs.String(), want) {
		t.Errorf("the log has no %q:\n%s", want, logs)
	}
	held[0].Close()
	testenv.Eventually(t, 20*time.Second, "a place freed by a closed connection", func() bool {
		resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Get("http://" + addr + "/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// A client that asks for a large response and never reads it does not
// hold its connection: the handler's write fails at the write timeout
// (injected short here; the instance's is 10 min).
func TestHTTPServerDropsClientsThatDoNotRead(t *testing.T) {
	lim := enclave.DefaultHTTPLimits()
	lim.WriteTimeout = 500 * time.Millisecond
	wrote := make(chan error, 1)
	big := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/big" {
			io.WriteString(w, "hello")
			return
		}
		chunk := make([]byte, 64<<10)
		for range 1024 { // 64 MiB: more than the link's window and the sockets' buffers
			if _, err := w.Write(chunk); err != nil {
				wrote <- err
				return
			}
		}
		wrote <- nil
	})
	addr, _ := publicPort(t, lim, big)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n") // and never read
	select {
	case err := <-wrote:
		if err == nil {
			t.Fatal("64 MiB were written to a client that reads nothing")
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the handler still writes after 60 s")
	}
}

// One client (an IPv4 address; an IPv6 /64) holds at most
// MaxConnsPerClient of the public port's places; another client still
// gets one while it holds them all.
func TestHTTPServerCapsConnectionsPerClient(t *testing.T) {
	lim := enclave.DefaultHTTPLimits()
	lim.MaxConnsPerClient = 2
	addr, logs := publicPort(t, lim, hello)
	http.DefaultClient.CloseIdleConnections()
	hold := func(local string) (net.Conn, error) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			return nil, err
		}
		c.SetDeadline(time.Now().Add(30 * time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			c.Close()
			return nil, err
		}
		io.Copy(io.Discard, resp.Body)
		return c, nil
	}
	for range 2 { // from an address no earlier connection of the test used
		c, err := hold("127.0.0.3")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	third, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.3")}}).Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	io.WriteString(third, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if err := closedByServer(third); err != nil {
		t.Errorf("a client's third connection: %v", err)
	}
	if want := "too many connections from one client\" side=enclave at_most=2"; !strings.Contains(logs.String(), want) {
		t.Errorf("the log has no %q:\n%s", want, logs)
	}
	other, err := hold("127.0.0.2")
	if err != nil {
		t.Fatalf("another client while the first holds its places: %v", err)
	}
	other.Close()
}
