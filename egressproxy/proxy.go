// Package egressproxy is the enclave's transparent proxy for renters'
// containers: the only way their TCP connections leave the enclave.
//
// It runs inside the enclave. Each container gets its own listener; the
// enclave's firewall redirects every TCP connection coming from the
// container's bridge to it (iptables REDIRECT), and the proxy reads the
// original destination from the socket (SO_ORIGINAL_DST). A container
// reaches only the hosts it asked for at deploy time, within the
// operator's policy: each is named in its /etc/hosts at a synthetic
// address (198.18.0.0/15, never routed on the internet), which the proxy
// maps back to the host name before dialing it through the parent. There
// is no DNS inside, so nothing else resolves; a connection to any other
// address or port is refused and logged. The default is deny.
package egressproxy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/enclaved/enclaved/egress"

	"github.com/enclaved/enclaved/internal/ratelog"
	"github.com/enclaved/enclaved/link"
)

// DefaultMaxConns bounds the connections one container has through its
// proxy at once, unless Proxy.MaxConns says otherwise. Each is an egress
// stream on the link, whose dials are capped for the whole instance
// (link.DefaultLimits); this keeps one container from taking them all.
const DefaultMaxConns = 64

// Why a container's connection was refused (Proxy.Refused).
const (
	RefusedNotAllowed    = "not_allowed"          // a destination the container did not ask for
	RefusedTooMany       = "too_many_connections" // MaxConns open already
	RefusedNoDestination = "no_destination"       // its original destination could not be read
	RefusedDialFailed    = "dial_failed"          // the dial through the parent failed (or the policy no longer allows it)
)

// RefusalReasons are every reason a connection is refused for.
var RefusalReasons = []string{RefusedNotAllowed, RefusedTooMany, RefusedNoDestination, RefusedDialFailed}

// DialFunc dials through the parent (tunnel.Egress.DialContext).
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Proxy serves one container's redirected connections.
type Proxy struct {
	Container string // its name, for the log
	Plan      egress.Plan
	Dial      DialFunc
	Log       *slog.Logger
	// DialTimeout bounds the dial through the parent (default 15 s).
	DialTimeout time.Duration
	// MaxConns bounds the container's connections open at once (default
	// DefaultMaxConns); one more is refused (closed) and logged, at most
	// once per 10 s.
	MaxConns int
	// Refused (optional) is told of every connection refused, by reason
	// (RefusedNotAllowed ...).
	Refused func(reason string)

	mu     sync.Mutex
	open   int
	warned ratelog.Warner
}

// Serve accepts redirected connections on l until ctx ends or l closes.
func (p *Proxy) Serve(ctx context.Context, l net.Listener) error {
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			dst, err := OriginalDst(c)
			if err != nil {
				p.log().Warn("container egress without a destination", "container", p.Container, "err", err)
				p.refused(RefusedNoDestination)
				c.Close()
				return
			}
			p.Handle(ctx, c, dst)
		}()
	}
}

func (p *Proxy) refused(reason string) {
	if p.Refused != nil {
		p.Refused(reason)
	}
}

func (p *Proxy) log() *slog.Logger {
	if p.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return p.Log
}

// Handle carries one connection whose original destination is dst, or
// refuses it (closing c) and logs why. It returns when both directions
// are done.
func (p *Proxy) Handle(ctx context.Context, c net.Conn, dst netip.AddrPort) {
	defer c.Close()
	limit := cmp.Or(p.MaxConns, DefaultMaxConns)
	if !p.acquire(limit) {
		p.warned.Warn(p.log(), "container egress refused: too many connections", "container", p.Container, "to", dst.String(), "at_most", limit)
		p.refused(RefusedTooMany)
		return
	}
	defer p.release()
	addr, err := p.Plan.Destination(dst)
	if err != nil {
		p.log().Warn("container egress denied", "container", p.Container, "to", dst.String(), "why", err.Error())
		p.refused(RefusedNotAllowed)
		return
	}
	timeout := p.DialTimeout
	if timeout == 0 {
		timeout = 15 * time.Second
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	up, err := p.Dial(dctx, "tcp", addr)
	cancel()
	if err != nil {
		p.log().Warn("container egress failed", "container", p.Container, "to", addr, "err", err)
		p.refused(RefusedDialFailed)
		return
	}
	p.log().Info("container egress", "container", p.Container, "to", addr)
	stop := context.AfterFunc(ctx, func() { c.Close(); up.Close() })
	defer stop()
	link.Pipe(c, up)
}

// acquire takes a place for one more connection, if fewer than limit are
// open.
func (p *Proxy) acquire(limit int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.open >= limit {
		return false
	}
	p.open++
	return true
}

func (p *Proxy) release() {
	p.mu.Lock()
	p.open--
	p.mu.Unlock()
}

// soOriginalDst is Linux's SO_ORIGINAL_DST (netfilter_ipv4.h).
const soOriginalDst = 80

// OriginalDst is where a connection redirected by iptables was going.
func OriginalDst(c net.Conn) (netip.AddrPort, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("original destination: %T is not TCP", c)
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	var sa syscall.RawSockaddrInet4
	var serr error
	err = raw.Control(func(fd uintptr) {
		size := uint32(unsafe.Sizeof(sa))
		_, _, errno := syscall.Syscall6(syscall.SYS_GETSOCKOPT, fd, syscall.IPPROTO_IP, soOriginalDst,
			uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&size)), 0)
		if errno != 0 {
			serr = errno
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: %w", err)
	}
	if sa.Family != syscall.AF_INET {
		return netip.AddrPort{}, fmt.Errorf("original destination: address family %d", sa.Family)
	}
	port := uint16(sa.Port>>8) | uint16(sa.Port<<8) // network byte order
	return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), port), nil
}
