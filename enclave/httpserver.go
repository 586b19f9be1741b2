package enclave

import (
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/enclaved/enclaved/internal/clientaddr"
	"github.com/enclaved/enclaved/internal/ratelog"
)

// HTTPLimits bounds the server of the instance's public port, which anyone
// can reach: what one connection may hold, and how many may be open.
type HTTPLimits struct {
	// ReadHeaderTimeout bounds a request's headers, and the TLS handshake
	// before the first: a connection that sends nothing, or its headers a
	// byte at a time, is closed.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds a whole request, body included.
	ReadTimeout time.Duration
	// WriteTimeout bounds a response, from the end of its request's
	// headers: a client that stops reading is dropped. A hijacked
	// connection (a websocket to a container) has no deadline.
	WriteTimeout time.Duration
	// IdleTimeout bounds a kept-alive connection between requests.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's headers; beyond, 431.
	MaxHeaderBytes int
	// MaxConns bounds the connections open at once; one more is closed
	// as soon as it is accepted, with a warning (at most one per 10 s).
	MaxConns int
	// MaxConnsPerClient bounds those of one client (an IPv4 address or
	// an IPv6 /64), so one address cannot hold every place.
	MaxConnsPerClient int
}

// DefaultHTTPLimits are the bounds of the instance's public port. A page
// load, an API call or an LNURL callback takes well under a second; the
// generous ones are for renters' containers behind it: an upload has 5 min,
// a download or an event stream 10 min (event streams reconnect).
// MaxConns is the link's ingress cap (link.DefaultLimits): in the
// enclave, the parent stops forwarding at the same number. Each connection
// may hold a link window (256 KiB) and TLS buffers: 512 connections are
// about 150 MiB at worst.
func DefaultHTTPLimits() HTTPLimits {
	return HTTPLimits{
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       5 * time.Minute,
		WriteTimeout:      10 * time.Minute,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    64 << 10,
		MaxConns:          512,
		MaxConnsPerClient: 32,
	}
}

// NewHTTPServer is the server of the instance's public port, serving h
// within lim, and the listener to serve it on: l capped at lim.MaxConns,
// then TLS when tlsConf is set (the cap counts connections before their
// handshake).
func NewHTTPServer(h http.Handler, l net.Listener, tlsConf *tls.Config, lim HTTPLimits, log *slog.Logger) (*http.Server, net.Listener) {
	if lim.MaxConns > 0 {
		l = &capListener{Listener: l, max: lim.MaxConns, perClient: lim.MaxConnsPerClient, log: log, clients: map[netip.Prefix]int{}}
	}
	if tlsConf != nil {
		l = tls.NewListener(l, tlsConf)
	}
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: lim.ReadHeaderTimeout,
		ReadTimeout:       lim.ReadTimeout,
		WriteTimeout:      lim.WriteTimeout,
		IdleTimeout:       lim.IdleTimeout,
		MaxHeaderBytes:    lim.MaxHeaderBytes,
	}, l
}

// capListener closes the connections it accepts beyond max open at once,
// or beyond perClient of one client. It refuses rather than wait: in the
// enclave a waiting connection would hold a link stream, and the parent
// would keep forwarding more.
type capListener struct {
	net.Listener
	max, perClient int
	log            *slog.Logger
	warn           ratelog.Warner

	mu      sync.Mutex
	open    int
	clients map[netip.Prefix]int // open connections per client
}

func (l *capListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		key := clientaddr.Key(c.RemoteAddr().String())
		l.mu.Lock()
		all := l.open < l.max
		mine := l.perClient <= 0 || l.clients[key] < l.perClient
		if all && mine {
			l.open++
			l.clients[key]++
		}
		l.mu.Unlock()
		switch {
		case all && mine:
			return &cappedConn{Conn: c, l: l, key: key}, nil
		case !all:
			l.warn.Warn(l.log, "HTTP connection refused: too many connections", "at_most", l.max)
		default:
			l.warn.Warn(l.log, "HTTP connection refused: too many connections from one client", "at_most", l.perClient)
		}
		c.Close()
	}
}

// cappedConn gives its place back when it is closed.
type cappedConn struct {
	net.Conn
	l    *capListener
	key  netip.Prefix
	once sync.Once
}

func (c *cappedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		c.l.open--
		if c.l.clients[c.key]--; c.l.clients[c.key] <= 0 {
			delete(c.l.clients, c.key)
		}
		c.l.mu.Unlock()
	})
	return err
}

// CloseWrite half-closes the connection where it can (the server uses it
// for a graceful close).
func (c *cappedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
