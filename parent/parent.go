// Package parent is the host side of the enclave: the EC2 instance that
// launches the enclave and forwards bytes for it. It is untrusted by
// design, and this package holds nothing the enclave must keep secret: it
// dials TCP for the enclave (whose connections carry TLS), forwards
// public ports in (TLS terminates in the enclave), stores blobs (encrypted
// by the enclave) on disk, answers metadata the operator supplies, and
// keeps the enclave's log lines.
//
// It serves link sessions the enclave opens: over vsock in production,
// TCP on 127.0.0.1 in dev mode and tests.
package parent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/enclaved/enclaved/internal/ratelog"
	"github.com/enclaved/enclaved/link"
)

// MaxBlob bounds a stored blob (Server.MaxBlob's default).
const MaxBlob = 1 << 30

// MaxLogLine bounds one line of the enclave's log.
const MaxLogLine = 16 << 10

// Server serves the enclave's link sessions.
type Server struct {
	BlobDir string
	Meta    link.Metadata
	LogOut  io.Writer // the enclave's log lines; nil discards them
	Log     *slog.Logger
	// DialTimeout bounds egress dials (default 10 s).
	DialTimeout time.Duration
	// Limits bounds the streams of each session (zero: link's
	// DefaultLimits): the public connections forwarded in as ingress
	// streams are capped apart from the enclave's own streams.
	Limits link.Limits
	// MaxBlob bounds a stored blob (default the constant MaxBlob); a put
	// beyond it is reset at once, naming the limit.
	MaxBlob int64

	mu      sync.Mutex
	cur     *link.Session
	logs    sync.Mutex     // serialises lines written to LogOut
	refused ratelog.Warner // public connections not forwarded
}

func (s *Server) log() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

// Serve accepts enclave connections on l until ctx ends. The newest
// session is the one ingress connections go to.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	return acceptAll(ctx, l, func(c net.Conn) {
		sess, err := link.NewSessionLimits(c, link.Parent, s.handle, s.Limits)
		if err != nil {
			s.log().Warn("enclave connection refused", "err", err)
			return
		}
		s.log().Info("enclave connected", "from", c.RemoteAddr().String())
		s.mu.Lock()
		old := s.cur
		s.cur = sess
		s.mu.Unlock()
		if old != nil {
			old.Close()
		}
		select {
		case <-sess.Done():
			s.log().Warn("enclave session ended", "err", sess.Err())
		case <-ctx.Done():
			sess.Close()
		}
	})
}

// Session is the enclave's current session, or nil.
func (s *Server) Session() *link.Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != nil && s.cur.Err() != nil {
		return nil
	}
	return s.cur
}

func (s *Server) handle(st *link.Stream, svc link.Service, arg string) {
	switch svc {
	case link.Dial:
		s.dial(st, arg)
	case link.BlobPut:
		s.blobPut(st, arg)
	case link.BlobGet:
		s.blobGet(st, arg)
	case link.Meta:
		b, _ := json.Marshal(s.Meta)
		st.Accept()
		st.Write(b)
		st.Close()
	case link.Log:
		s.logSink(st)
	default:
		st.Refuse(svc.String() + " is not served by the parent")
	}
}

// dial connects to host:port and pipes the stream to it.
func (s *Server) dial(st *link.Stream, addr string) {
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
		st.Refuse(fmt.Sprintf("%q is not host:port", addr))
		return
	}
	timeout := s.DialTimeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		st.Refuse(err.Error())
		return
	}
	if err := st.Accept(); err != nil {
		c.Close()
		return
	}
	link.Pipe(st, c)
}

var blobName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// blobPut stores the stream's bytes as name, atomically, and answers "ok"
// after the enclave's close. Anything else resets the stream with the
// reason, a blob over MaxBlob as soon as it is: the enclave's writer fails
// at once rather than wait for credit the parent no longer grants.
func (s *Server) blobPut(st *link.Stream, name string) {
	if !blobName.MatchString(name) {
		st.Refuse(fmt.Sprintf("%q is not a blob name", name))
		return
	}
	tmp, err := os.CreateTemp(s.BlobDir, "."+name+".*")
	if err != nil {
		st.Refuse("blob store: " + err.Error())
		return
	}
	defer os.Remove(tmp.Name())
	limit := s.MaxBlob
	if limit <= 0 {
		limit = MaxBlob
	}
	st.Accept()
	defer st.Close()
	n, err := io.Copy(tmp, io.LimitReader(st, limit+1))
	if err == nil && n > limit {
		err = fmt.Errorf("blob over %d bytes, the parent's limit", limit)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(s.BlobDir, name))
	}
	if err != nil {
		s.log().Warn("blob not stored", "blob", name, "err", err)
		st.Reset(err.Error())
		return
	}
	st.Write([]byte(link.BlobOK))
}

func (s *Server) blobGet(st *link.Stream, name string) {
	if !blobName.MatchString(name) {
		st.Refuse(fmt.Sprintf("%q is not a blob name", name))
		return
	}
	f, err := os.Open(filepath.Join(s.BlobDir, name))
	if errors.Is(err, os.ErrNotExist) {
		st.Refuse("not found")
		return
	}
	if err != nil {
		st.Refuse("blob store: " + err.Error())
		return
	}
	defer f.Close()
	st.Accept()
	io.Copy(st, f)
	st.Close()
}

// logSink writes the enclave's log lines, each cut at MaxLogLine.
func (s *Server) logSink(st *link.Stream) {
	st.Accept()
	defer st.Close()
	sc := bufio.NewScanner(st)
	sc.Buffer(make([]byte, 4096), MaxLogLine)
	for sc.Scan() {
		if s.LogOut != nil {
			s.logs.Lock()
			fmt.Fprintf(s.LogOut, "enclave: %s\n", sc.Bytes())
			s.logs.Unlock()
		}
	}
}

// Forward accepts public connections on l and forwards each into the
// enclave as an ingress stream for port, until ctx ends. A connection that
// cannot be forwarded is closed at once: when no enclave is connected,
// when the session has as many ingress streams open as its Limits allow
// (the enclave's own streams keep their room), or when the enclave
// refuses it. Those refusals are logged at most once per 10 s.
func (s *Server) Forward(ctx context.Context, l net.Listener, port int) error {
	return acceptAll(ctx, l, func(c net.Conn) {
		sess := s.Session()
		if sess == nil {
			s.refused.Warn(s.log(), "public connection closed: no enclave connected", "port", port)
			c.Close()
			return
		}
		octx, cancel := context.WithTimeout(ctx, 10*time.Second)
		st, err := sess.Open(octx, link.Ingress, strconv.Itoa(port)+" "+c.RemoteAddr().String())
		cancel()
		if err != nil {
			msg := "ingress refused by the enclave"
			var le *link.LimitError
			if errors.As(err, &le) {
				msg = "public connection closed: " + le.Reason()
			}
			s.refused.Warn(s.log(), msg, "port", port, "err", err)
			c.Close()
			return
		}
		link.Pipe(st, c)
	})
}

// acceptAll serves each connection l accepts on its own goroutine until
// ctx ends (then it closes l and returns ctx's error) or l fails.
func acceptAll(ctx context.Context, l net.Listener, serve func(net.Conn)) error {
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		go serve(c)
	}
}
