package link

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
	"unicode/utf8"
)

// Role is which side of the boundary a session speaks for.
type Role byte

// Roles. The enclave opens streams with odd ids, the parent with even ones.
const (
	Enclave Role = 'E'
	Parent  Role = 'P'
)

func (r Role) String() string {
	switch r {
	case Enclave:
		return "enclave"
	case Parent:
		return "parent"
	}
	return fmt.Sprintf("role %q", byte(r))
}

// Service is what a stream is opened for.
type Service byte

// Services. The enclave opens Dial, BlobPut, BlobGet, Meta and Log streams;
// the parent opens Ingress streams.
const (
	Dial    Service = 1 + iota // egress: a TCP connection to the argument host:port
	Ingress                    // a connection to a public port; argument: "port remote-addr"
	BlobPut                    // store the stream's bytes as the argument name
	BlobGet                    // read the blob of the argument name
	Meta                       // the parent's metadata (JSON)
	Log                        // log lines the parent keeps
)

func (s Service) String() string {
	names := [...]string{"", "dial", "ingress", "blob-put", "blob-get", "meta", "log"}
	if int(s) < len(names) && s != 0 {
		return names[s]
	}
	return fmt.Sprintf("service %d", byte(s))
}

// Window is the bytes a stream may receive before its reader grants more;
// it bounds the memory a peer can make a stream hold.
const Window = 256 << 10

// MaxStreams is the default bound on the streams open at once in each
// direction (Limits.Total).
const MaxStreams = 1024

// handshakeTimeout bounds the exchange of hello frames.
const handshakeTimeout = 10 * time.Second

// ErrClosed is returned for operations on a closed session or stream.
var ErrClosed = errors.New("link: closed")

// Handler answers a stream the peer opened: it calls Accept or Refuse,
// then serves it. It runs on its own goroutine.
type Handler func(st *Stream, svc Service, arg string)

// Session is one connection between enclave and parent.
type Session struct {
	conn    net.Conn
	role    Role
	handler Handler

	wmu  sync.Mutex // serialises writes
	wbuf []byte

	mu      sync.Mutex
	streams map[uint32]*Stream
	limits  Limits
	open    [2]counts      // streams open: [0] ours, [1] the peer's
	counted [2][256]uint64 // streams opened so far, by service (Counts)
	next    uint32         // the next id this side opens
	peerMax uint32         // the highest id the peer opened
	err     error
	done    chan struct{}
}

// NewSession runs the hello exchange on conn as role and starts reading
// frames; streams the peer opens go to handler (nil refuses them all).
// Its streams are bounded by DefaultLimits.
func NewSession(conn net.Conn, role Role, handler Handler) (*Session, error) {
	return NewSessionLimits(conn, role, handler, Limits{})
}

// NewSessionLimits is NewSession with the streams bounded by limits (the
// zero Limits is DefaultLimits).
func NewSessionLimits(conn net.Conn, role Role, handler Handler, limits Limits) (*Session, error) {
	if role != Enclave && role != Parent {
		return nil, fmt.Errorf("link: bad role %v", role)
	}
	s := &Session{conn: conn, role: role, handler: handler, streams: map[uint32]*Stream{}, limits: limits.orDefault(), done: make(chan struct{})}
	s.next = 2
	if role == Enclave {
		s.next = 1
	}
	conn.SetDeadline(time.Now().Add(handshakeTimeout))
	if err := s.write(Frame{Type: THello, Payload: []byte{byte(role)}}); err != nil {
		conn.Close()
		return nil, err
	}
	br := bufio.NewReaderSize(conn, 64<<10)
	buf := make([]byte, MaxData)
	f, err := ReadFrame(br, buf)
	if err == nil && (f.Type != THello || len(f.Payload) != 1) {
		err = protocolErr("first frame %s, want hello", f.Type)
	}
	if err == nil && (Role(f.Payload[0]) == role || (Role(f.Payload[0]) != Enclave && Role(f.Payload[0]) != Parent)) {
		err = protocolErr("peer says it is the %v", Role(f.Payload[0]))
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	go s.readLoop(br, buf)
	return s, nil
}

// Done is closed when the session ends; Err then says why.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err is why the session ended (nil while it runs; ErrClosed after Close).
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close ends the session and every stream.
func (s *Session) Close() error {
	s.fail(ErrClosed)
	return nil
}

// fail ends the session with err (the first cause wins).
func (s *Session) fail(err error) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return
	}
	s.err = err
	streams := s.streams
	s.streams = map[uint32]*Stream{}
	s.open = [2]counts{}
	s.mu.Unlock()
	s.conn.Close()
	for _, st := range streams {
		st.abort(err)
	}
	close(s.done)
}

func (s *Session) write(f Frame) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.writeLocked(f)
}

// writeLocked writes f; s.wmu is held.
func (s *Session) writeLocked(f Frame) error {
	var err error
	if s.wbuf, err = AppendFrame(s.wbuf[:0], f); err != nil {
		return err
	}
	if _, err := s.conn.Write(s.wbuf); err != nil {
		s.fail(fmt.Errorf("link: write: %w", err))
		return err
	}
	return nil
}

// Open opens a stream for svc with arg and waits until the peer accepts or
// refuses it, or ctx ends. When this side already has as many streams open
// as its Limits allow (of svc, or in all), it fails at once with a
// *LimitError.
func (s *Session) Open(ctx context.Context, svc Service, arg string) (*Stream, error) {
	if len(arg) > MaxArg {
		return nil, fmt.Errorf("link: argument of %d bytes (at most %d)", len(arg), MaxArg)
	}
	// The id is taken and its open written under the write lock, so that
	// opens from several goroutines reach the peer in id order (it ends
	// the session on one out of order).
	s.wmu.Lock()
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		s.wmu.Unlock()
		return nil, ErrClosed
	}
	if err := s.admit(false, svc); err != nil {
		s.mu.Unlock()
		s.wmu.Unlock()
		return nil, err
	}
	id := s.next
	s.next += 2
	st := newStream(s, id, svc, arg)
	s.streams[id] = st
	s.mu.Unlock()
	err := s.writeLocked(Frame{Type: TOpen, Stream: id, Payload: append([]byte{byte(svc)}, arg...)})
	s.wmu.Unlock()
	if err != nil {
		return nil, err
	}
	select {
	case <-st.opened:
		if st.openErr != nil {
			return nil, st.openErr
		}
		return st, nil
	case <-ctx.Done():
		st.Close()
		return nil, ctx.Err()
	case <-s.done:
		return nil, ErrClosed
	}
}

// ours says whether id is one this side opens.
func (s *Session) ours(id uint32) bool { return (id%2 == 1) == (s.role == Enclave) }

// readLoop reads frames until the connection fails or the peer breaks the
// protocol.
func (s *Session) readLoop(r io.Reader, buf []byte) {
	for {
		f, err := ReadFrame(r, buf)
		if err == nil {
			err = s.dispatch(f)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("link: peer closed the connection: %w", err)
			}
			s.fail(err)
			return
		}
	}
}

func (s *Session) dispatch(f Frame) error {
	switch f.Type {
	case THello:
		return protocolErr("a second hello")
	case TPing:
		return s.write(Frame{Type: TPong, Payload: f.Payload})
	case TPong:
		return nil
	case TOpen:
		return s.opened(f)
	}
	s.mu.Lock()
	st := s.streams[f.Stream]
	known := f.Stream != 0 && ((s.ours(f.Stream) && f.Stream < s.next) || (!s.ours(f.Stream) && f.Stream <= s.peerMax))
	s.mu.Unlock()
	if st == nil {
		if known {
			return nil // a stream closed here; the peer had not seen it yet
		}
		return protocolErr("%s for stream %d, never opened", f.Type, f.Stream)
	}
	switch f.Type {
	case TAccept, TRefuse:
		if !s.ours(f.Stream) {
			return protocolErr("%s for stream %d the peer opened", f.Type, f.Stream)
		}
		reason := ""
		if f.Type == TRefuse {
			reason = text(f.Payload)
		}
		return st.answered(f.Type == TAccept, reason)
	case TData:
		return st.received(f.Payload)
	case TCredit:
		if len(f.Payload) != 4 {
			return protocolErr("credit of %d bytes", len(f.Payload))
		}
		return st.credited(binary.BigEndian.Uint32(f.Payload))
	case TClose:
		st.peerClosed()
	case TReset:
		st.abort(fmt.Errorf("link: stream reset by the peer: %s", text(f.Payload)))
		s.forget(st.id)
	}
	return nil
}

// opened handles the peer's TOpen.
func (s *Session) opened(f Frame) error {
	if f.Stream == 0 || s.ours(f.Stream) {
		return protocolErr("peer opened stream %d, an id of ours", f.Stream)
	}
	if len(f.Payload) < 1 {
		return protocolErr("open without a service")
	}
	svc, arg := Service(f.Payload[0]), f.Payload[1:]
	s.mu.Lock()
	if f.Stream <= s.peerMax {
		s.mu.Unlock()
		return protocolErr("stream %d opened again or out of order (last %d)", f.Stream, s.peerMax)
	}
	s.peerMax = f.Stream
	st := newStream(s, f.Stream, svc, string(arg))
	refusal := ""
	switch {
	case s.handler == nil:
		refusal = "no such service here"
	case !utf8.Valid(arg):
		refusal = "argument is not UTF-8"
	default:
		if err := s.admit(true, svc); err != nil {
			refusal = err.Reason()
		} else {
			s.streams[f.Stream] = st
		}
	}
	s.mu.Unlock()
	if refusal != "" {
		return s.write(Frame{Type: TRefuse, Stream: f.Stream, Payload: []byte(refusal)})
	}
	go s.handler(st, svc, string(arg))
	return nil
}

// forget drops a stream that ended, freeing its place under the limits.
func (s *Session) forget(id uint32) {
	s.mu.Lock()
	if st, ok := s.streams[id]; ok {
		delete(s.streams, id)
		s.open[s.dir(id)].remove(st.svc)
	}
	s.mu.Unlock()
}

// text makes a peer's reason printable and short.
func text(b []byte) string {
	out := make([]rune, 0, len(b))
	for _, r := range string(b) {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError {
			r = '?'
		}
		out = append(out, r)
	}
	return string(out)
}
