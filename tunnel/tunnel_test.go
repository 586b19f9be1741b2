package tunnel_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/enclaved/enclaved/billing/lnd"
	"github.com/enclaved/enclaved/internal/proc"
	"github.com/enclaved/enclaved/internal/testenv"
	"github.com/enclaved/enclaved/link"
	"github.com/enclaved/enclaved/parent"
	"github.com/enclaved/enclaved/tunnel"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// world is a parent serving on 127.0.0.1 and an enclave's keeper dialing
// it, both running until the test ends.
type world struct {
	parent *parent.Server
	keeper *link.Keeper
	ingr   *tunnel.Ingress
	logs   *testenv.SyncBuffer // the enclave's own log (egress denials)
	plogs  *testenv.SyncBuffer // the parent's log sink
}

func newWorld(t testing.TB, ports ...int) *world {
	t.Helper()
	w := &world{ingr: tunnel.NewIngress(ports...), logs: &testenv.SyncBuffer{}, plogs: &testenv.SyncBuffer{}}
	w.parent = &parent.Server{BlobDir: t.TempDir(), Meta: link.Metadata{InstanceID: "i-0123456789abcdef0"}, LogOut: w.plogs}
	w.keeper = testenv.ParentLink(t, w.parent, w.ingr.Handle)
	return w
}

func (w *world) egress(allow ...string) *tunnel.Egress {
	return &tunnel.Egress{Link: w.keeper, Allow: allow, Log: slog.New(slog.NewTextHandler(w.logs, nil))}
}

// server accepts TCP on 127.0.0.1, echoing, and counts its connections.
func server(t testing.TB) (string, *atomic.Int32) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var n atomic.Int32
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return l.Addr().String(), &n
}

// An allowed host is reached through the parent; a denied one is refused
// in the enclave (the parent never dials it) and logged; an allowed but
// closed port gets the parent's refusal.
func TestEgressAllowlist(t *testing.T) {
	w := newWorld(t)
	allowed, _ := server(t)
	denied, deniedHits := server(t)
	closed := func() string {
		l, _ := net.Listen("tcp", "127.0.0.1:0")
		defer l.Close()
		return l.Addr().String()
	}()
	e := w.egress(allowed, closed, "*.example.com:443")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	c, err := e.DialContext(ctx, "tcp", allowed)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("through the parent"))
	buf := make([]byte, 18)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "through the parent" {
		t.Errorf("echo %q %v", buf, err)
	}
	c.Close()

	_, err = e.DialContext(ctx, "tcp", denied)
	var de *tunnel.DeniedError
	if !errors.As(err, &de) {
		t.Errorf("denied host: %v", err)
	}
	if deniedHits.Load() != 0 {
		t.Error("the denied host was connected to")
	}
	if !strings.Contains(w.logs.String(), "egress denied") || !strings.Contains(w.logs.String(), denied) {
		t.Errorf("denial not logged: %q", w.logs.String())
	}
	var re *link.RefusedError
	if _, err := e.DialContext(ctx, "tcp", closed); !errors.As(err, &re) || !strings.Contains(re.Reason, "refused") {
		t.Errorf("closed port: %v", err)
	}
	if _, err := e.DialContext(ctx, "udp", allowed); err == nil {
		t.Error("udp dialed")
	}
}

// The instance's LND connection goes through the parent with the node's
// certificate pinned: the right one works, another node's is refused.
func TestLNDThroughEgressIsPinned(t *testing.T) {
	ln := testenv.Lightning(t)
	w := newWorld(t)
	e := w.egress(ln.Operator.GRPCAddr)
	ep, err := ln.Operator.Endpoint("invoice")
	if err != nil {
		t.Fatal(err)
	}
	ep.Dial = func(ctx context.Context, addr string) (net.Conn, error) { return e.DialContext(ctx, "tcp", addr) }
	c, err := lnd.New(ep)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.AddInvoice(ctx, 1000, "through the parent", time.Minute); err != nil {
		t.Fatalf("invoice through egress: %v", err)
	}
	wrong, err := os.ReadFile(ln.Payer.TLSCertPath())
	if err != nil {
		t.Fatal(err)
	}
	ep.TLSCert = wrong
	bad, err := lnd.New(ep)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	if _, err := bad.AddInvoice(ctx, 1000, "intercepted", time.Minute); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a node with another certificate answered: %v", err)
	}
}

// Public connections the parent forwards reach the enclave's listener;
// blobs round-trip; metadata arrives.
func TestIngressBlobsMeta(t *testing.T) {
	w := newWorld(t, 443)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		io.WriteString(rw, "hello from the enclave to "+r.RemoteAddr)
	})}
	go srv.Serve(w.ingr.Listener(443))
	defer srv.Close()
	pub, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go w.parent.Forward(ctx, pub, 443)
	if _, err := w.keeper.Session(ctx); err != nil {
		t.Fatal(err)
	}
	// The parent takes the session once the hellos are through.
	if err := proc.WaitFor(ctx, "the parent's session", 10*time.Second, func(context.Context) (bool, error) {
		return w.parent.Session() != nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + pub.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	body := string(b)
	if !strings.HasPrefix(body, "hello from the enclave to 127.0.0.1:") {
		t.Errorf("ingress answer %q", body)
	}

	data := bytes.Repeat([]byte("sealed backup "), 100_000)
	if err := tunnel.PutBlob(ctx, w.keeper, "backup-000001", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	r, err := tunnel.GetBlob(ctx, w.keeper, "backup-000001")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(r)
	r.Close()
	if !bytes.Equal(got, data) {
		t.Errorf("blob came back as %d bytes, want %d", len(got), len(data))
	}
	var re *link.RefusedError
	if _, err := tunnel.GetBlob(ctx, w.keeper, "missing"); !errors.As(err, &re) || re.Reason != "not found" {
		t.Errorf("missing blob: %v", err)
	}
	if err := tunnel.PutBlob(ctx, w.keeper, "../escape", strings.NewReader("x")); !errors.As(err, &re) {
		t.Errorf("a path as blob name: %v", err)
	}
	m, err := tunnel.FetchMeta(ctx, w.keeper)
	if err != nil || m.InstanceID != "i-0123456789abcdef0" {
		t.Errorf("meta %+v %v", m, err)
	}
}

// Throughput through the egress tunnel (enclave → link → parent → TCP)
// against a direct TCP connection to the same sink, in the same run.
func BenchmarkEgress(b *testing.B) {
	sink, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	go func() {
		for {
			c, err := sink.Accept()
			if err != nil {
				return
			}
			go io.Copy(io.Discard, c)
		}
	}()
	chunk := make([]byte, 64<<10)
	run := func(b *testing.B, c net.Conn) {
		defer c.Close()
		b.SetBytes(int64(len(chunk)))
		for b.Loop() {
			if _, err := c.Write(chunk); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("tunnel", func(b *testing.B) {
		w := newWorld(b)
		c, err := w.egress(sink.Addr().String()).DialContext(context.Background(), "tcp", sink.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		run(b, c)
	})
	b.Run("direct", func(b *testing.B) {
		c, err := net.Dial("tcp", sink.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		run(b, c)
	})
}

// The enclave's log lines reach the parent's sink.
func TestLogsReachTheParent(t *testing.T) {
	w := newWorld(t)
	out := w.plogs
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lw := tunnel.NewLogWriter(ctx, w.keeper)
	log := slog.New(slog.NewTextHandler(lw, nil))
	log.Info("instance up", "npub", "npub1example")
	if err := proc.WaitFor(ctx, "the log line at the parent", 10*time.Second, func(context.Context) (bool, error) {
		return strings.Contains(out.String(), "enclave: ") && strings.Contains(out.String(), `msg="instance up" npub=npub1example`), nil
	}); err != nil {
		t.Fatalf("%v; the parent has %q", err, out.String())
	}
}
