package tunnel

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/enclaved/enclaved/link"
)

// ConnectProxy is an HTTP CONNECT proxy on the enclave's loopback for the
// programs inside the enclave that dial on their own: dockerd pulling
// images is told HTTPS_PROXY=http://<its address>. Each tunnel goes
// through Dial (the instance's Egress), so its allowlist applies; the TLS
// inside is between the program and the registry.
type ConnectProxy struct {
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	Log  *slog.Logger
}

func (p *ConnectProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodConnect {
		http.Error(w, "only CONNECT is served here", http.StatusMethodNotAllowed)
		return
	}
	if _, _, err := net.SplitHostPort(r.Host); err != nil {
		http.Error(w, "CONNECT wants host:port", http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	up, err := p.Dial(ctx, "tcp", r.Host)
	cancel()
	var denied *DeniedError
	switch {
	case errors.As(err, &denied):
		http.Error(w, denied.Error(), http.StatusForbidden)
		return
	case err != nil:
		if p.Log != nil {
			p.Log.Warn("connect proxy", "to", r.Host, "err", err)
		}
		http.Error(w, "cannot reach "+r.Host, http.StatusBadGateway)
		return
	}
	defer up.Close()
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "cannot hijack", http.StatusInternalServerError)
		return
	}
	c, buf, err := hj.Hijack()
	if err != nil {
		return
	}
	defer c.Close()
	if _, err := c.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
		return
	}
	// Whatever the client sent after its request is in buf.
	link.Pipe(&hijacked{Conn: c, r: buf.Reader}, up)
}

// hijacked is a hijacked connection read through the server's buffer.
type hijacked struct {
	net.Conn
	r io.Reader
}

func (h *hijacked) Read(p []byte) (int, error) { return h.r.Read(p) }

func (h *hijacked) CloseWrite() error {
	if cw, ok := h.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return h.Conn.Close()
}

// ServeConnect serves p on l until ctx ends.
func ServeConnect(ctx context.Context, l net.Listener, p *ConnectProxy) error {
	srv := &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
