package link

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"time"
)

// Stream is one flow of bytes over a session, a net.Conn.
type Stream struct {
	s   *Session
	id  uint32
	svc Service
	arg string

	opened  chan struct{} // closed when the peer answers our open
	openErr error

	mu         sync.Mutex
	cond       *sync.Cond
	rbuf       bytes.Buffer
	recvAvail  int // bytes the peer may still send
	unacked    int // bytes read but not yet granted back
	peerEOF    bool
	err        error // reset, session end or local close
	sendCredit int64
	finSent    bool
	answered_  bool
	rdeadline  time.Time
	wdeadline  time.Time
	timers     [2]*time.Timer
}

var _ net.Conn = (*Stream)(nil)

func newStream(s *Session, id uint32, svc Service, arg string) *Stream {
	st := &Stream{s: s, id: id, svc: svc, arg: arg, opened: make(chan struct{}), recvAvail: Window, sendCredit: Window}
	st.cond = sync.NewCond(&st.mu)
	return st
}

// Service and Arg say what the stream was opened for.
func (st *Stream) Service() Service { return st.svc }
func (st *Stream) Arg() string      { return st.arg }

// Accept answers the peer's open: the stream is served.
func (st *Stream) Accept() error {
	return st.s.write(Frame{Type: TAccept, Stream: st.id})
}

// Refuse answers the peer's open with a short reason, and forgets it.
func (st *Stream) Refuse(reason string) error {
	if len(reason) > MaxReason {
		reason = reason[:MaxReason]
	}
	st.s.forget(st.id)
	st.abort(ErrClosed)
	return st.s.write(Frame{Type: TRefuse, Stream: st.id, Payload: []byte(reason)})
}

// answered takes the peer's answer to our open.
func (st *Stream) answered(ok bool, reason string) error {
	st.mu.Lock()
	if st.answered_ {
		st.mu.Unlock()
		return protocolErr("stream %d answered twice", st.id)
	}
	st.answered_ = true
	if !ok {
		st.openErr = &RefusedError{Service: st.svc, Arg: st.arg, Reason: reason}
	}
	st.mu.Unlock()
	if !ok {
		st.s.forget(st.id)
	}
	close(st.opened)
	return nil
}

// RefusedError is the peer's refusal to open a stream.
type RefusedError struct {
	Service Service
	Arg     string
	Reason  string
}

func (e *RefusedError) Error() string {
	return "link: " + e.Service.String() + " " + e.Arg + " refused: " + e.Reason
}

func (st *Stream) received(p []byte) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.s.ours(st.id) && !st.answered_ {
		return protocolErr("data on stream %d before it was accepted", st.id)
	}
	if st.peerEOF {
		return protocolErr("data on stream %d after its close", st.id)
	}
	if len(p) > st.recvAvail {
		return protocolErr("%d bytes on stream %d beyond its credit of %d", len(p), st.id, st.recvAvail)
	}
	st.recvAvail -= len(p)
	if st.err == nil {
		st.rbuf.Write(p)
		st.cond.Broadcast()
	}
	return nil
}

func (st *Stream) credited(n uint32) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.sendCredit += int64(n)
	if n == 0 || st.sendCredit > 1<<31 {
		return protocolErr("credit of %d on stream %d", n, st.id)
	}
	st.cond.Broadcast()
	return nil
}

func (st *Stream) peerClosed() {
	st.mu.Lock()
	st.peerEOF = true
	done := st.finSent
	st.cond.Broadcast()
	st.mu.Unlock()
	if done {
		st.s.forget(st.id)
	}
}

// abort ends the stream with err (the first cause wins).
func (st *Stream) abort(err error) {
	st.mu.Lock()
	if st.err == nil {
		st.err = err
	}
	if !st.answered_ && st.s.ours(st.id) {
		st.answered_ = true
		st.openErr = err
		close(st.opened)
	}
	st.cond.Broadcast()
	st.mu.Unlock()
}

// errDeadline is what a Stream's Read and Write return once their deadline
// has passed. As net.Conn asks of its deadline errors, it is a net.Error
// whose Timeout is true, and errors.Is matches it with
// os.ErrDeadlineExceeded ("i/o timeout"); the package does no I/O, so it
// names that error without importing os.
var errDeadline error = deadlineError{}

type deadlineError struct{}

func (deadlineError) Error() string   { return "i/o timeout" }
func (deadlineError) Timeout() bool   { return true }
func (deadlineError) Temporary() bool { return true }

// Is reports whether target is os.ErrDeadlineExceeded: the timeout whose
// text is "i/o timeout".
func (deadlineError) Is(target error) bool {
	t, ok := target.(interface{ Timeout() bool })
	return ok && t.Timeout() && target.Error() == "i/o timeout"
}

func expired(d time.Time) bool { return !d.IsZero() && !time.Now().Before(d) }

// Read reads what the peer sent; io.EOF after its close.
func (st *Stream) Read(b []byte) (int, error) {
	st.mu.Lock()
	for st.rbuf.Len() == 0 && st.err == nil && !st.peerEOF && !expired(st.rdeadline) {
		st.cond.Wait()
	}
	if st.rbuf.Len() > 0 {
		n, _ := st.rbuf.Read(b)
		st.unacked += n
		grant := 0
		if st.unacked >= Window/4 && !st.peerEOF {
			grant, st.unacked = st.unacked, 0
			st.recvAvail += grant
		}
		st.mu.Unlock()
		if grant > 0 {
			st.s.write(Frame{Type: TCredit, Stream: st.id, Payload: binary.BigEndian.AppendUint32(nil, uint32(grant))})
		}
		return n, nil
	}
	defer st.mu.Unlock()
	switch {
	case st.err != nil:
		return 0, st.err
	case st.peerEOF:
		return 0, io.EOF
	}
	return 0, errDeadline
}

// Write sends b, waiting for credit as the peer reads.
func (st *Stream) Write(b []byte) (int, error) {
	sent := 0
	for len(b) > 0 {
		st.mu.Lock()
		for st.sendCredit <= 0 && st.err == nil && !st.finSent && !expired(st.wdeadline) {
			st.cond.Wait()
		}
		switch {
		case st.err != nil:
			st.mu.Unlock()
			return sent, st.err
		case st.finSent:
			st.mu.Unlock()
			return sent, ErrClosed
		case st.sendCredit <= 0:
			st.mu.Unlock()
			return sent, errDeadline
		}
		n := min(len(b), MaxData, int(st.sendCredit))
		st.sendCredit -= int64(n)
		st.mu.Unlock()
		if err := st.s.write(Frame{Type: TData, Stream: st.id, Payload: b[:n]}); err != nil {
			return sent, err
		}
		sent += n
		b = b[n:]
	}
	return sent, nil
}

// CloseWrite tells the peer no more data comes; reading goes on.
func (st *Stream) CloseWrite() error {
	st.mu.Lock()
	if st.finSent || st.err != nil {
		st.mu.Unlock()
		return nil
	}
	st.finSent = true
	done := st.peerEOF
	st.cond.Broadcast()
	st.mu.Unlock()
	if done {
		st.s.forget(st.id)
	}
	return st.s.write(Frame{Type: TClose, Stream: st.id})
}

// Close ends both directions: the peer reads EOF; what it still sends is
// dropped.
func (st *Stream) Close() error {
	err := st.CloseWrite()
	st.teardown()
	return err
}

// teardown fails local reads and writes, drops what was received, stops
// the timers and forgets the stream.
func (st *Stream) teardown() {
	st.abort(ErrClosed)
	st.mu.Lock()
	st.rbuf.Reset()
	for _, t := range st.timers {
		if t != nil {
			t.Stop()
		}
	}
	st.mu.Unlock()
	st.s.forget(st.id)
}

// Reset aborts the stream both ways with a short reason: the peer's reads
// and writes fail at once with it (a writer waiting for credit too), and
// what either side still sends is dropped. Local reads and writes fail
// with ErrClosed.
func (st *Stream) Reset(reason string) error {
	if len(reason) > MaxReason {
		reason = reason[:MaxReason]
	}
	st.teardown()
	return st.s.write(Frame{Type: TReset, Stream: st.id, Payload: []byte(reason)})
}

// Addr names a stream's end: its service and argument.
type Addr struct {
	Service Service
	Arg     string
}

func (a Addr) Network() string { return "link" }
func (a Addr) String() string  { return a.Service.String() + " " + a.Arg }

func (st *Stream) LocalAddr() net.Addr  { return Addr{st.svc, st.arg} }
func (st *Stream) RemoteAddr() net.Addr { return Addr{st.svc, st.arg} }

func (st *Stream) SetDeadline(t time.Time) error {
	st.SetReadDeadline(t)
	return st.SetWriteDeadline(t)
}

func (st *Stream) SetReadDeadline(t time.Time) error  { st.setDeadline(0, t); return nil }
func (st *Stream) SetWriteDeadline(t time.Time) error { st.setDeadline(1, t); return nil }

func (st *Stream) setDeadline(i int, t time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if i == 0 {
		st.rdeadline = t
	} else {
		st.wdeadline = t
	}
	if st.timers[i] != nil {
		st.timers[i].Stop()
		st.timers[i] = nil
	}
	if !t.IsZero() {
		st.timers[i] = time.AfterFunc(time.Until(t), func() {
			st.mu.Lock()
			st.cond.Broadcast()
			st.mu.Unlock()
		})
	}
	st.cond.Broadcast()
}
