package link

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fuzzBaseline is the goroutine count of the fuzzing process before the
// first session: a session that leaks goroutines pushes the count above
// it (plus a little slack for the testing package's own).
var (
	fuzzBaselineOnce sync.Once
	fuzzBaseline     int
)

// FuzzSession feeds the fuzzer's bytes, as a hostile peer's frames, to a
// live session of either role over a net.Pipe. Whatever they are, the
// session does not panic; it only ever sends well-formed frames; it ends
// with a protocol error, or (when the bytes are whole frames) still
// answers a ping after them; and once closed, its goroutines and its
// handlers' are gone.
//
// mode: bit 0 the session is the parent (else the enclave); bit 1 the
// bytes begin with the peer's hello (else the harness sends a valid one);
// bit 2 the session opens a stream of its own before the bytes come; bit 3
// it has no handler (it refuses every stream).
func FuzzSession(f *testing.F) {
	frames := func(fs ...Frame) []byte {
		var b []byte
		for _, fr := range fs {
			var err error
			if b, err = AppendFrame(b, fr); err != nil {
				f.Fatal(err)
			}
		}
		return b
	}
	open := func(id uint32, svc Service, arg string) Frame {
		return Frame{Type: TOpen, Stream: id, Payload: append([]byte{byte(svc)}, arg...)}
	}
	credit := func(id, n uint32) Frame {
		return Frame{Type: TCredit, Stream: id, Payload: []byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}}
	}
	// The enclave's peer opens even ids, the parent's odd ones.
	f.Add(byte(0), frames(open(2, Ingress, "443 1.2.3.4:5"), Frame{Type: TData, Stream: 2, Payload: []byte("hi")}, Frame{Type: TClose, Stream: 2}))
	f.Add(byte(1), frames(open(1, Dial, "example.com:443"), Frame{Type: TData, Stream: 1, Payload: []byte("x")}, Frame{Type: TReset, Stream: 1, Payload: []byte("bye")}))
	f.Add(byte(4), frames(Frame{Type: TAccept, Stream: 1}, Frame{Type: TData, Stream: 1, Payload: []byte("back")}, credit(1, 100), Frame{Type: TClose, Stream: 1}))
	f.Add(byte(5), frames(Frame{Type: TRefuse, Stream: 2, Payload: []byte("no")}, Frame{Type: TPing, Payload: []byte("12345678")}))
	f.Add(byte(2), frames(Frame{Type: THello, Payload: []byte{byte(Parent)}}, open(2, Log, "")))
	f.Add(byte(3), frames(Frame{Type: THello, Payload: []byte{byte(Enclave)}}, open(3, Meta, "")))
	f.Add(byte(8), frames(open(2, Ingress, "x"), open(4, Dial, "\xff"), credit(2, 0)))
	f.Add(byte(0), frames(open(2, Ingress, "x"), Frame{Type: TAccept, Stream: 2}))
	f.Add(byte(0), []byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add(byte(2), []byte{Version, byte(THello), 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, mode byte, data []byte) {
		fuzzBaselineOnce.Do(func() { fuzzBaseline = runtime.NumGoroutine() })
		fuzzSession(t, mode, data)
		// Every goroutine of the session, its handlers and the harness
		// ends once the session is closed.
		deadline := time.Now().Add(10 * time.Second)
		for runtime.NumGoroutine() > fuzzBaseline+4 {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				t.Fatalf("%d goroutines after the session ended (%d before):\n%s", runtime.NumGoroutine(), fuzzBaseline, buf[:runtime.Stack(buf, true)])
			}
			runtime.Gosched()
		}
	})
}

func fuzzSession(t *testing.T, mode byte, data []byte) {
	role, peer := Enclave, Parent
	if mode&1 != 0 {
		role, peer = Parent, Enclave
	}
	rawHello, opens, noHandler := mode&2 != 0, mode&4 != 0, mode&8 != 0

	a, b := net.Pipe()
	defer b.Close()

	// The peer's reader: every frame the session sends must be one the
	// protocol allows.
	var ping [8]byte
	rand.Read(ping[:])
	pong := make(chan struct{})
	ourOpen := make(chan struct{}, 1)
	collected := make(chan struct{})
	go func() {
		defer close(collected)
		buf := make([]byte, MaxData)
		first := true
		for {
			fr, err := ReadFrame(b, buf)
			if err != nil {
				// A frame cut short is a connection closed under a
				// write; a frame the protocol refuses is a bug.
				if IsProtocolError(err) {
					t.Errorf("the session sent a malformed frame: %v", err)
				}
				return
			}
			ours := (fr.Stream%2 == 1) == (role == Enclave)
			switch {
			case first:
				if fr.Type != THello || !bytes.Equal(fr.Payload, []byte{byte(role)}) {
					t.Errorf("first frame %s %q, want the %v's hello", fr.Type, fr.Payload, role)
				}
				first = false
			case fr.Type == THello:
				t.Error("the session sent a second hello")
			case fr.Type == TOpen:
				if !ours || fr.Stream == 0 {
					t.Errorf("the %v opened stream %d, an id of its peer", role, fr.Stream)
				}
				select {
				case ourOpen <- struct{}{}:
				default:
				}
			case fr.Type == TAccept || fr.Type == TRefuse:
				if ours {
					t.Errorf("the session answered stream %d, one it opened", fr.Stream)
				}
			case fr.Type == TPong:
				if bytes.Equal(fr.Payload, ping[:]) {
					close(pong)
				}
			case fr.Type == TPing:
				t.Error("the session pinged")
			}
		}
	}()

	var running atomic.Int32
	var handler Handler
	if !noHandler {
		handler = func(st *Stream, svc Service, arg string) {
			running.Add(1)
			defer running.Add(-1)
			if svc == Log {
				st.Refuse("not here")
				return
			}
			st.Accept()
			io.Copy(st, st) // echo, until the peer closes or the session ends
			st.CloseWrite()
		}
	}
	type result struct {
		s   *Session
		err error
	}
	started := make(chan result, 1)
	go func() {
		s, err := NewSession(a, role, handler)
		started <- result{s, err}
	}()

	// What the bytes are, read as frames: whole frames, frames ending in
	// one the protocol refuses, or frames ending in a truncated one.
	stream := data
	if !rawHello {
		hello, _ := AppendFrame(nil, Frame{Type: THello, Payload: []byte{byte(peer)}})
		stream = append(hello, data...)
	}
	var end error
	n := 0
	for r, buf := bytes.NewReader(stream), make([]byte, MaxData); ; n++ {
		if _, end = ReadFrame(r, buf); end != nil {
			break
		}
	}
	whole, refused := end == io.EOF, IsProtocolError(end)

	var s *Session
	if !rawHello {
		if _, err := b.Write(stream[:HeaderLen+1]); err != nil {
			t.Fatal(err)
		}
		res := <-started
		if res.err != nil {
			t.Fatalf("a valid hello was refused: %v", res.err)
		}
		s = res.s
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opened := make(chan struct{})
	if opens && s != nil {
		go func() {
			defer close(opened)
			st, err := s.Open(ctx, Dial, "example.com:443")
			if err != nil {
				return
			}
			st.Write([]byte("hello"))
			io.Copy(io.Discard, st)
			st.Close()
		}()
		select {
		case <-ourOpen:
		case <-s.Done():
		}
	} else {
		close(opened)
	}

	// The peer's bytes; the write fails once the session has closed its
	// end.
	rest := stream
	if !rawHello {
		rest = stream[HeaderLen+1:]
	}
	b.Write(rest)
	if rawHello {
		closed := !refused && (!whole || n == 0)
		if closed {
			b.Close() // the handshake would wait for the rest of its frame
		}
		res := <-started
		if res.err != nil {
			if !closed && !IsProtocolError(res.err) {
				t.Fatalf("the handshake failed with %v, not a protocol error", res.err)
			}
			return
		}
		s = res.s
	}
	defer func() {
		s.Close()
		b.Close()
		<-collected
		<-opened
		for deadline := time.Now().Add(10 * time.Second); running.Load() > 0; runtime.Gosched() {
			if time.Now().After(deadline) {
				t.Fatalf("%d stream handlers still run after the session closed", running.Load())
			}
		}
		if err := s.Err(); err == nil {
			t.Fatal("a closed session has no error")
		}
	}()

	wait := func(what string) error {
		select {
		case <-s.Done():
			return s.Err()
		case <-time.After(10 * time.Second):
			t.Fatalf("the session did not end after %s", what)
			return nil
		}
	}
	switch {
	case refused:
		if err := wait("a frame the protocol refuses"); !IsProtocolError(err) {
			t.Fatalf("the session ended with %v, not a protocol error", err)
		}
	case whole:
		// Still up, unless an earlier frame broke the protocol.
		pf, _ := AppendFrame(nil, Frame{Type: TPing, Payload: ping[:]})
		b.Write(pf)
		select {
		case <-pong:
		case <-s.Done():
			if err := s.Err(); !IsProtocolError(err) {
				t.Fatalf("the session ended with %v, not a protocol error", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the session neither answered a ping nor ended")
		}
	default: // truncated: the session waits for the rest, until the peer leaves
		b.Close()
		if err := wait("its peer left"); err == nil || errors.Is(err, ErrClosed) {
			t.Fatalf("the session ended with %v when its peer left", err)
		}
	}
}
