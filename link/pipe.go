package link

import (
	"io"
	"net"
	"sync"
)

// Pipe copies both ways between a and b until both directions end (each
// end is half-closed as its source ends, where it can be), then closes
// both. Both sides use it: the parent between a stream and a TCP
// connection, the enclave's proxies between a local connection and an
// egress stream.
func Pipe(a, b net.Conn) {
	var wg sync.WaitGroup
	half := func(dst, src net.Conn) {
		io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		} else {
			dst.Close()
		}
	}
	wg.Go(func() { half(a, b) })
	wg.Go(func() { half(b, a) })
	wg.Wait()
	a.Close()
	b.Close()
}
