package testenv

import (
	"context"
	"net"
	"testing"

	"github.com/enclaved/enclaved/link"
	"github.com/enclaved/enclaved/parent"
)

// ParentLink serves srv (a parent) on 127.0.0.1 and returns an enclave's
// keeper linked to it over TCP (the dev stand-in for vsock), with handler
// for the streams the parent opens (nil: none). Both run until the test
// ends.
func ParentLink(tb testing.TB, srv *parent.Server, handler link.Handler) *link.Keeper {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go srv.Serve(ctx, l)
	k := &link.Keeper{Handler: handler, Dial: func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", l.Addr().String())
	}}
	go k.Run(ctx)
	return k
}
