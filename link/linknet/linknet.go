// Package linknet is where the link is listened on and dialled: vsock in
// production, unix sockets and TCP in dev and tests. It is used on both
// sides: the parent listens, the enclave dials. The protocol spoken over
// the connection is package link, which does no I/O of its own.
//
// Addresses of the link, in configuration:
//
//	vsock:PORT          the parent listens on its vsock port
//	vsock:CID:PORT      the enclave dials the parent (CID 3) at PORT
//	unix:PATH           a unix socket (dev mode, tests)
//	HOST:PORT           TCP (dev mode, tests)
package linknet

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/mdlayher/vsock"
)

// Listen listens on addr (the parent's side).
func Listen(addr string) (net.Listener, error) {
	switch {
	case strings.HasPrefix(addr, "vsock:"):
		port, err := strconv.ParseUint(strings.TrimPrefix(addr, "vsock:"), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("link address %q: want vsock:PORT", addr)
		}
		return vsock.Listen(uint32(port), nil)
	case strings.HasPrefix(addr, "unix:"):
		path := strings.TrimPrefix(addr, "unix:")
		os.Remove(path) // a socket left by an earlier run
		return net.Listen("unix", path)
	}
	return net.Listen("tcp", addr)
}

// DialAddr dials addr (the enclave's side).
func DialAddr(ctx context.Context, addr string) (net.Conn, error) {
	switch {
	case strings.HasPrefix(addr, "vsock:"):
		cid, port, ok := strings.Cut(strings.TrimPrefix(addr, "vsock:"), ":")
		c, err1 := strconv.ParseUint(cid, 10, 32)
		p, err2 := strconv.ParseUint(port, 10, 32)
		if !ok || err1 != nil || err2 != nil {
			return nil, fmt.Errorf("link address %q: want vsock:CID:PORT", addr)
		}
		return vsock.Dial(uint32(c), uint32(p), nil)
	case strings.HasPrefix(addr, "unix:"):
		var d net.Dialer
		return d.DialContext(ctx, "unix", strings.TrimPrefix(addr, "unix:"))
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}
