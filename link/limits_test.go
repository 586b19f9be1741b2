package link

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// hold accepts every stream and keeps it open until the peer closes it.
func hold(st *Stream, svc Service, arg string) {
	st.Accept()
	io.Copy(io.Discard, st)
	st.Close()
}

// Streams are capped per direction and per service. The parent's ingress
// streams fill up to their cap and no further, and that cap leaves the
// enclave's own streams (dials, blobs, metadata, log) all the room they
// had: the directions are counted apart. The enclave's dials fill to
// theirs and blobs still open. A closed stream frees its place.
func TestStreamCapsPerDirectionAndService(t *testing.T) {
	es, ps := pair(t, hold, hold)
	ctx := context.Background()
	caps := DefaultLimits().PerService
	var ingress []*Stream
	for i := range caps[Ingress] {
		st, err := ps.Open(ctx, Ingress, fmt.Sprintf("443 10.0.0.1:%d", i))
		if err != nil {
			t.Fatalf("ingress %d: %v", i, err)
		}
		ingress = append(ingress, st)
	}
	_, err := ps.Open(ctx, Ingress, "443 10.0.0.2:1")
	var le *LimitError
	if !errors.As(err, &le) || err.Error() != fmt.Sprintf("link: too many ingress streams (at most %d)", caps[Ingress]) {
		t.Fatalf("an ingress stream beyond the cap: %v", err)
	}
	if ours, _ := ps.Streams(Ingress); ours != caps[Ingress] {
		t.Errorf("the parent counts %d ingress streams, want %d", ours, caps[Ingress])
	}

	// The enclave's services, with the parent's ingress full.
	var dials []*Stream
	for i := range caps[Dial] {
		st, err := es.Open(ctx, Dial, fmt.Sprintf("example.com:%d", i+1))
		if err != nil {
			t.Fatalf("dial %d with the ingress full: %v", i, err)
		}
		dials = append(dials, st)
	}
	if _, err := es.Open(ctx, Dial, "example.com:1"); !errors.As(err, &le) || le.Reason() != fmt.Sprintf("too many dial streams (at most %d)", caps[Dial]) {
		t.Fatalf("a dial beyond the cap: %v", err)
	}
	for _, svc := range []Service{BlobPut, BlobGet, Meta, Log} {
		st, err := es.Open(ctx, svc, "x")
		if err != nil {
			t.Fatalf("%s with the ingress and the dials full: %v", svc, err)
		}
		st.Close()
	}

	// Closing frees a place, on each side, once both ends have let go.
	ingress[0].Close()
	eventually(t, "the enclave to close the ingress stream", func() bool {
		_, peers := es.Streams(Ingress)
		return peers < caps[Ingress]
	})
	st, err := ps.Open(ctx, Ingress, "443 10.0.0.3:1")
	if err != nil {
		t.Fatalf("ingress after one closed: %v", err)
	}
	st.Close()
	dials[0].Close()
	eventually(t, "the parent to close the dial stream", func() bool {
		_, peers := ps.Streams(Dial)
		return peers < caps[Dial]
	})
	if st, err = es.Open(ctx, Dial, "example.com:1"); err != nil {
		t.Fatalf("dial after one closed: %v", err)
	}
	st.Close()
	for _, st := range append(ingress, dials...) {
		st.Close()
	}
	if ours, peers := ps.Streams(Ingress); ours != 0 || peers != 0 {
		t.Errorf("the parent still counts %d/%d ingress streams after all closed", ours, peers)
	}
	if ours, _ := es.Streams(Dial); ours != 0 {
		t.Errorf("the enclave still counts %d dials after all closed", ours)
	}
	if es.Err() != nil || ps.Err() != nil {
		t.Errorf("a cap ended the session: %v %v", es.Err(), ps.Err())
	}
}

// A hostile parent that ignores its caps gets the enclave's refusal,
// naming the cap, for every ingress stream beyond it, and the session
// goes on; a stream it resets frees a place.
func TestPeerBeyondItsCapIsRefused(t *testing.T) {
	a, b := net.Pipe()
	frames := make(chan Frame, 64)
	go func() {
		ReadFrame(b, make([]byte, MaxData)) // the enclave's hello
		writeFrame(b, Frame{Type: THello, Payload: []byte{byte(Parent)}})
		buf := make([]byte, MaxData)
		for {
			f, err := ReadFrame(b, buf)
			if err != nil {
				close(frames)
				return
			}
			f.Payload = append([]byte(nil), f.Payload...)
			frames <- f
		}
	}()
	s, err := NewSessionLimits(a, Enclave, func(st *Stream, svc Service, arg string) { st.Accept() }, Limits{PerService: map[Service]int{Ingress: 3}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(); b.Close() })
	answer := func(id uint32) Frame {
		t.Helper()
		writeFrame(b, Frame{Type: TOpen, Stream: id, Payload: []byte{byte(Ingress), '4', '4', '3'}})
		for f := range frames {
			if f.Stream == id && (f.Type == TAccept || f.Type == TRefuse) {
				return f
			}
		}
		t.Fatalf("no answer to stream %d: %v", id, s.Err())
		return Frame{}
	}
	for id := uint32(2); id <= 6; id += 2 {
		if f := answer(id); f.Type != TAccept {
			t.Fatalf("stream %d: %s %q", id, f.Type, f.Payload)
		}
	}
	for id := uint32(8); id <= 12; id += 2 {
		if f := answer(id); f.Type != TRefuse || string(f.Payload) != "too many ingress streams (at most 3)" {
			t.Fatalf("stream %d beyond the cap: %s %q", id, f.Type, f.Payload)
		}
	}
	writeFrame(b, Frame{Type: TReset, Stream: 2, Payload: []byte("gone")})
	if f := answer(14); f.Type != TAccept {
		t.Errorf("after a reset: %s %q", f.Type, f.Payload)
	}
	if s.Err() != nil {
		t.Errorf("the session ended: %v", s.Err())
	}
	if _, peers := s.Streams(Ingress); peers != 3 {
		t.Errorf("%d ingress streams counted, want 3", peers)
	}
}

// eventually waits for cond, checking every 10 ms for at most 10 s (a
// bound, not a timing assertion).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10 s for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// writeFrame writes one frame, as a hostile peer would.
func writeFrame(w io.Writer, f Frame) {
	b, err := AppendFrame(nil, f)
	if err != nil {
		panic(err)
	}
	w.Write(b)
}

// The zero Limits is the default; a partial one keeps what it sets.
func TestLimitsDefaults(t *testing.T) {
	if got := (Limits{}).orDefault(); got.Total != MaxStreams || got.PerService[Ingress] != 512 {
		t.Errorf("zero limits: %+v", got)
	}
	got := Limits{Total: 10, PerService: map[Service]int{Dial: 2}}.orDefault()
	if got.Total != 10 || got.PerService[Dial] != 2 || len(got.PerService) != 1 {
		t.Errorf("partial limits: %+v", got)
	}
	if !strings.Contains((&LimitError{Max: 7}).Error(), "too many streams (at most 7)") {
		t.Error("total's error")
	}
}

// Streams opened at once from many goroutines (the parent forwarding a
// burst of public connections) reach the peer in id order: the session
// survives and every stream opens.
func TestConcurrentOpensKeepIDOrder(t *testing.T) {
	for range 5 {
		es, ps := pair(t, hold, hold)
		errs := make(chan error, 200)
		for i := range cap(errs) {
			go func() {
				st, err := ps.Open(context.Background(), Ingress, fmt.Sprintf("443 10.0.0.1:%d", i))
				if err == nil {
					st.Close()
				}
				errs <- err
			}()
		}
		for range cap(errs) {
			if err := <-errs; err != nil {
				t.Fatalf("open: %v (enclave: %v)", err, es.Err())
			}
		}
		if es.Err() != nil || ps.Err() != nil {
			t.Fatalf("the session ended: %v / %v", es.Err(), ps.Err())
		}
	}
}

// A keeper counts the streams of each service by who opened them: those
// open in its live session, and those opened over every session it kept
// (what the operator's metrics show); a refused open is not counted.
func TestKeeperCountsStreamsAcrossSessions(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	conns := make(chan net.Conn, 4)
	sessions := make(chan *Session, 4)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns <- c
			s, err := NewSessionLimits(c, Parent, hold, Limits{Total: 8, PerService: map[Service]int{Ingress: 1}})
			if err == nil {
				sessions <- s
			}
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	k := &Keeper{Handler: hold, Dial: func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", l.Addr().String())
	}}
	go k.Run(ctx)
	for range 2 {
		st, err := k.Open(ctx, Dial, "x:1")
		if err != nil {
			t.Fatal(err)
		}
		st.Close()
	}
	ps := <-sessions
	in, err := ps.Open(ctx, Ingress, "443 10.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if _, err := ps.Open(ctx, Ingress, "443 10.0.0.1:2"); err == nil {
		t.Fatal("an ingress stream beyond the cap of 1 opened")
	}
	eventually(t, "the enclave to count the parent's ingress stream", func() bool {
		c := k.Counts(Ingress)
		return c.Open == [2]int{0, 1} && c.Opened == [2]uint64{0, 1}
	})

	(<-conns).Close() // the session ends; the keeper dials again
	<-sessions
	st, err := k.Open(ctx, Dial, "x:1")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if c := k.Counts(Dial); c.Open != [2]int{1, 0} || c.Opened != [2]uint64{3, 0} {
		t.Errorf("dials: %+v, want 1 open and 3 opened by the enclave", c)
	}
	if c := k.Counts(Ingress); c.Open != [2]int{0, 0} || c.Opened != [2]uint64{0, 1} {
		t.Errorf("ingress: %+v, want none open and 1 opened by the parent", c)
	}
}
