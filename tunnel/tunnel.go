// Package tunnel is the enclave's side of what the parent offers over the
// link: egress dials, checked against the instance's allowlist before they
// leave the enclave; ingress listeners fed by the public connections the
// parent forwards in; blobs; the parent's metadata.
//
// It runs inside the enclave. Nothing the parent answers is trusted:
// egress carries TLS the enclave checks (LND's certificate is pinned),
// ingress is served with TLS terminating here, metadata is size-capped and
// only advisory.
package tunnel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"

	"github.com/enclaved/enclaved/egress"
	"github.com/enclaved/enclaved/link"
)

// Opener opens link streams (a *link.Keeper, or a *link.Session).
type Opener interface {
	Open(ctx context.Context, svc link.Service, arg string) (*link.Stream, error)
}

// Egress dials TCP through the parent, only to allowed destinations.
type Egress struct {
	Link Opener
	// Allow lists the destinations: "host:port", "host:*", "*.domain:port"
	// or "*.domain:*". Hosts compare case-insensitively; nothing else is
	// allowed.
	Allow []string
	Log   *slog.Logger
}

// DeniedError is an egress the allowlist refused.
type DeniedError struct{ Addr string }

func (e *DeniedError) Error() string { return "egress to " + e.Addr + " is not allowed" }

// DialContext dials addr (host:port) through the parent if the allowlist
// has it. Its signature is net.Dialer's, for HTTP transports, websocket
// and gRPC dialers.
func (e *Egress) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("egress: network %q (only tcp)", network)
	}
	if !egress.Allowed(e.Allow, addr) {
		if e.Log != nil {
			e.Log.Warn("egress denied", "to", addr)
		}
		return nil, &DeniedError{Addr: addr}
	}
	st, err := e.Link.Open(ctx, link.Dial, addr)
	if err != nil {
		return nil, fmt.Errorf("egress to %s: %w", addr, err)
	}
	return st, nil
}

// Ingress hands the parent's forwarded connections to the listener of
// their public port. Its Handle is the link handler of the enclave's
// session.
type Ingress struct {
	ports map[int]*Listener
}

// NewIngress serves the given public ports; each has a listener.
func NewIngress(ports ...int) *Ingress {
	in := &Ingress{ports: map[int]*Listener{}}
	for _, p := range ports {
		in.ports[p] = &Listener{port: p, conns: make(chan net.Conn), done: make(chan struct{})}
	}
	return in
}

// Listener is the net.Listener of a public port (nil if not served).
func (in *Ingress) Listener(port int) *Listener { return in.ports[port] }

// Handle takes an ingress stream ("port remote-addr"); anything else the
// parent opens is refused.
func (in *Ingress) Handle(st *link.Stream, svc link.Service, arg string) {
	if svc != link.Ingress {
		st.Refuse(svc.String() + " is not served by the enclave")
		return
	}
	ps, remote, _ := strings.Cut(arg, " ")
	port, err := strconv.Atoi(ps)
	l := in.ports[port]
	if err != nil || l == nil {
		st.Refuse(fmt.Sprintf("no ingress on port %q", ps))
		return
	}
	select {
	case l.conns <- &ingressConn{Stream: st, remote: remote}:
		st.Accept()
	case <-l.done:
		st.Refuse("port closed")
	}
}

// Listener yields the connections forwarded to one public port.
type Listener struct {
	port  int
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

var _ net.Listener = (*Listener)(nil)

func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *Listener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *Listener) Addr() net.Addr {
	return link.Addr{Service: link.Ingress, Arg: strconv.Itoa(l.port)}
}

// ingressConn is a forwarded connection; its remote address is what the
// parent says (advisory).
type ingressConn struct {
	*link.Stream
	remote string
}

type remoteAddr string

func (a remoteAddr) Network() string { return "tcp" }
func (a remoteAddr) String() string  { return string(a) }

func (c *ingressConn) RemoteAddr() net.Addr { return remoteAddr(c.remote) }

// FetchMeta asks the parent for its metadata.
func FetchMeta(ctx context.Context, o Opener) (link.Metadata, error) {
	var m link.Metadata
	st, err := o.Open(ctx, link.Meta, "")
	if err != nil {
		return m, err
	}
	defer st.Close()
	stop := context.AfterFunc(ctx, func() { st.Close() })
	defer stop()
	b, err := io.ReadAll(io.LimitReader(st, link.MaxMeta+1))
	if err != nil {
		return m, err
	}
	if len(b) > link.MaxMeta {
		return m, errors.New("parent metadata over its size cap")
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("parent metadata: %w", err)
	}
	return m, nil
}
