package link

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// pair connects an enclave session and a parent session over TCP on
// 127.0.0.1; handlers serve the streams each side's peer opens.
func pair(t testing.TB, enclave, parent Handler) (*Session, *Session) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ps := make(chan *Session, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			ps <- nil
			return
		}
		s, err := NewSession(c, Parent, parent)
		if err != nil {
			t.Error(err)
		}
		ps <- s
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	es, err := NewSession(c, Enclave, enclave)
	if err != nil {
		t.Fatal(err)
	}
	p := <-ps
	if p == nil {
		t.FailNow()
	}
	t.Cleanup(func() { es.Close(); p.Close() })
	return es, p
}

// echo accepts every stream and sends back what it reads.
func echo(st *Stream, svc Service, arg string) {
	st.Accept()
	io.Copy(st, st)
	st.CloseWrite()
}

// A stream carries several windows' worth of bytes each way (the reader
// grants credit as it reads), and half-closes cleanly.
func TestStreamRoundTrip(t *testing.T) {
	es, _ := pair(t, nil, echo)
	st, err := es.Open(context.Background(), Dial, "example.com:443")
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 3*Window+12345)
	rand.Read(data)
	go func() {
		st.Write(data)
		st.CloseWrite()
	}()
	got, err := io.ReadAll(st)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %d of %d bytes: %v", len(got), len(data), err)
	}
	st.Close()
}

// The parent can refuse a stream with a reason; the enclave refuses what
// it does not serve.
func TestRefusals(t *testing.T) {
	es, ps := pair(t, nil, func(st *Stream, svc Service, arg string) { st.Refuse("dial " + arg + ": connection refused") })
	_, err := es.Open(context.Background(), Dial, "10.0.0.1:80")
	var re *RefusedError
	if !errors.As(err, &re) || !strings.Contains(re.Reason, "connection refused") {
		t.Errorf("open: %v", err)
	}
	if _, err := ps.Open(context.Background(), Ingress, "443 1.2.3.4:5555"); !errors.As(err, &re) || re.Reason != "no such service here" {
		t.Errorf("enclave without handler: %v", err)
	}
	if es.Err() != nil || ps.Err() != nil {
		t.Errorf("a refusal ended the session: %v %v", es.Err(), ps.Err())
	}
}

// rawParent accepts one enclave session's connection and lets the test
// write frames (or bytes) as a hostile parent would.
type rawParent struct {
	conn net.Conn
	buf  []byte
}

func hostile(t *testing.T) (*Session, *rawParent) {
	t.Helper()
	a, b := net.Pipe()
	raw := &rawParent{conn: b}
	go func() {
		ReadFrame(b, make([]byte, MaxData)) // the enclave's hello
		raw.send(t, Frame{Type: THello, Payload: []byte{byte(Parent)}})
	}()
	// The enclave accepts streams and never reads them.
	s, err := NewSession(a, Enclave, func(st *Stream, svc Service, arg string) { st.Accept() })
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, b) // whatever the enclave answers
	t.Cleanup(func() { s.Close(); b.Close() })
	return s, raw
}

func (r *rawParent) send(t *testing.T, f Frame) {
	b, err := AppendFrame(nil, f)
	if err != nil {
		t.Fatal(err)
	}
	r.conn.Write(b)
}

func ended(t *testing.T, s *Session) error {
	t.Helper()
	select {
	case <-s.Done():
		return s.Err()
	case <-time.After(10 * time.Second):
		t.Fatal("the session did not end")
		return nil
	}
}

// Every protocol violation a hostile parent can commit ends the session
// with a specific error; frames for streams the enclave closed are
// ignored.
func TestHostileParent(t *testing.T) {
	header := func(version byte, typ Type, stream, n uint32) []byte {
		h := []byte{version, byte(typ)}
		h = binary.BigEndian.AppendUint32(h, stream)
		return binary.BigEndian.AppendUint32(h, n)
	}
	open := func(id uint32) Frame {
		return Frame{Type: TOpen, Stream: id, Payload: []byte{byte(Ingress), '4', '4', '3'}}
	}
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, r *rawParent)
		want string
	}{
		{"garbage", func(t *testing.T, r *rawParent) { r.conn.Write([]byte("GET / HTTP/1.1\r\n\r\n")) }, "version 71"},
		{"unknown type", func(t *testing.T, r *rawParent) { r.conn.Write(header(Version, 99, 0, 0)) }, "unknown frame type 99"},
		{"oversized data", func(t *testing.T, r *rawParent) { r.conn.Write(header(Version, TData, 2, MaxData+1)) }, "data frame of 32769 bytes"},
		{"oversized open", func(t *testing.T, r *rawParent) { r.conn.Write(header(Version, TOpen, 2, 1<<30)) }, "open frame of 1073741824 bytes"},
		{"truncated", func(t *testing.T, r *rawParent) {
			r.conn.Write(header(Version, TPing, 0, 8))
			r.conn.Write([]byte{1, 2, 3})
			r.conn.Close()
		}, "unexpected EOF"},
		{"second hello", func(t *testing.T, r *rawParent) { r.send(t, Frame{Type: THello, Payload: []byte{byte(Parent)}}) }, "a second hello"},
		{"replayed open", func(t *testing.T, r *rawParent) { r.send(t, open(2)); r.send(t, open(2)) }, "stream 2 opened again or out of order"},
		{"out of order open", func(t *testing.T, r *rawParent) { r.send(t, open(6)); r.send(t, open(4)) }, "stream 4 opened again or out of order"},
		{"open with an enclave id", func(t *testing.T, r *rawParent) { r.send(t, open(3)) }, "an id of ours"},
		{"data for a stream never opened", func(t *testing.T, r *rawParent) { r.send(t, Frame{Type: TData, Stream: 8, Payload: []byte("x")}) }, "never opened"},
		{"data beyond credit", func(t *testing.T, r *rawParent) {
			r.send(t, open(2))
			chunk := make([]byte, MaxData)
			for range Window/MaxData + 1 {
				r.send(t, Frame{Type: TData, Stream: 2, Payload: chunk})
			}
		}, "beyond its credit"},
		{"zero credit", func(t *testing.T, r *rawParent) {
			r.send(t, open(2))
			r.send(t, Frame{Type: TCredit, Stream: 2, Payload: []byte{0, 0, 0, 0}})
		}, "credit of 0"},
		{"accept of a stream the parent opened", func(t *testing.T, r *rawParent) {
			r.send(t, open(2))
			r.send(t, Frame{Type: TAccept, Stream: 2})
		}, "accept for stream 2 the peer opened"},
		{"dropped connection", func(t *testing.T, r *rawParent) { r.conn.Close() }, "peer closed the connection"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, r := hostile(t)
			tc.run(t, r)
			if err := ended(t, s); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("session ended with %v, want %q", err, tc.want)
			}
		})
	}
}

// A stream the enclave closed may still get the parent's late frames:
// they are dropped, not a violation.
func TestLateFramesAfterClose(t *testing.T) {
	es, _ := pair(t, nil, echo)
	st, err := es.Open(context.Background(), Dial, "a:1")
	if err != nil {
		t.Fatal(err)
	}
	st.Write([]byte("ping"))
	st.Close() // the echo's answer arrives after this
	st2, err := es.Open(context.Background(), Dial, "b:2")
	if err != nil {
		t.Fatal(err)
	}
	st2.Write([]byte("still up"))
	st2.CloseWrite()
	if got, err := io.ReadAll(st2); string(got) != "still up" || err != nil {
		t.Errorf("second stream: %q %v", got, err)
	}
	if es.Err() != nil {
		t.Errorf("session ended: %v", es.Err())
	}
}

// The keeper dials again after the parent breaks the protocol or drops
// the connection, and streams work on the new session.
func TestKeeperReconnects(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var accepted atomic.Int32
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			switch accepted.Add(1) {
			case 1: // garbage
				c.Write(bytes.Repeat([]byte{0xff}, 100))
				go io.Copy(io.Discard, c)
			case 2: // a valid hello, then the connection drops
				s, err := NewSession(c, Parent, echo)
				if err == nil {
					s.Close()
				}
			default:
				go NewSession(c, Parent, echo)
			}
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	k := &Keeper{Dial: func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", l.Addr().String())
	}}
	go k.Run(ctx)
	octx, ocancel := context.WithTimeout(ctx, 20*time.Second)
	defer ocancel()
	var st *Stream
	for {
		st, err = k.Open(octx, Dial, "x:1")
		if err == nil || octx.Err() != nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("no stream after reconnecting: %v", err)
	}
	st.Write([]byte("hi"))
	st.CloseWrite()
	if got, _ := io.ReadAll(st); string(got) != "hi" {
		t.Errorf("echo %q", got)
	}
	if n := accepted.Load(); n < 3 {
		t.Errorf("%d connections, want at least 3", n)
	}
}

// Frames round-trip; AppendFrame refuses what ReadFrame would.
func TestFrameCaps(t *testing.T) {
	if _, err := AppendFrame(nil, Frame{Type: TData, Payload: make([]byte, MaxData+1)}); err == nil {
		t.Error("encoded an oversized data frame")
	}
	if _, err := AppendFrame(nil, Frame{Type: 42}); err == nil {
		t.Error("encoded an unknown type")
	}
	b, _ := AppendFrame(nil, Frame{Type: TRefuse, Stream: 7, Payload: []byte("no")})
	f, err := ReadFrame(bytes.NewReader(b), make([]byte, MaxData))
	if err != nil || f.Type != TRefuse || f.Stream != 7 || string(f.Payload) != "no" {
		t.Errorf("round trip %+v %v", f, err)
	}
}

func FuzzReadFrame(f *testing.F) {
	for _, fr := range []Frame{{Type: THello, Payload: []byte{'E'}}, {Type: TOpen, Stream: 2, Payload: []byte{1, 'a', ':', '1'}}, {Type: TData, Stream: 1, Payload: []byte("x")}} {
		b, _ := AppendFrame(nil, fr)
		f.Add(b)
	}
	f.Add([]byte{1, 5, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff})
	buf := make([]byte, MaxData)
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		for {
			fr, err := ReadFrame(r, buf)
			if err != nil {
				return
			}
			enc, err := AppendFrame(nil, fr)
			if err != nil {
				t.Fatalf("a frame read could not be written: %v", err)
			}
			if len(enc) != HeaderLen+len(fr.Payload) {
				t.Fatal("bad re-encoding")
			}
		}
	})
}

// Stream throughput over TCP through the link, against plain TCP in the
// same run.
func BenchmarkStream(b *testing.B) {
	es, _ := pair(b, nil, func(st *Stream, svc Service, arg string) { st.Accept(); io.Copy(io.Discard, st); st.Close() })
	st, err := es.Open(context.Background(), Dial, "sink:1")
	if err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	b.SetBytes(int64(len(chunk)))
	for b.Loop() {
		if _, err := st.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDirectTCP(b *testing.B) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			io.Copy(io.Discard, c)
		}
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	chunk := make([]byte, 64<<10)
	b.SetBytes(int64(len(chunk)))
	for b.Loop() {
		if _, err := c.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
}

// A stream's deadlines end Read and Write with the error net.Conn asks
// for: a net.Error that times out and is os.ErrDeadlineExceeded to
// errors.Is.
func TestStreamDeadlines(t *testing.T) {
	es, _ := pair(t, nil, func(st *Stream, svc Service, arg string) { st.Accept() }) // never reads nor writes
	st, err := es.Open(context.Background(), Dial, "example.com:443")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	isDeadline := func(what string, err error) {
		t.Helper()
		var ne net.Error
		if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() || err.Error() != "i/o timeout" {
			t.Errorf("%s past its deadline: %v, want os.ErrDeadlineExceeded", what, err)
		}
		if errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s past its deadline: %v is context.DeadlineExceeded", what, err)
		}
	}
	st.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err = st.Read(make([]byte, 10))
	isDeadline("read", err)
	st.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	n, err := st.Write(make([]byte, 2*Window))
	isDeadline("write", err)
	if n != Window {
		t.Errorf("wrote %d bytes before the deadline, want the window's %d", n, Window)
	}
}
