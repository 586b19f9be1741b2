package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/enclaved/enclaved/link"
)

// Blob transfers have a deadline that grows with what they moved: one that
// has moved n bytes fails once it has run longer than Timeout + n/Rate.
// A stalled transfer (the parent stops granting credit or sending, or the
// source stops producing) thus fails within Timeout plus the time its
// bytes so far earned, and a transfer of any size ends within Timeout +
// size/Rate. On a deadline the stream is reset, so the parent drops what
// it received.

// Defaults of Pace.
const (
	DefaultBlobTimeout = time.Minute
	DefaultBlobRate    = 1 << 20 // bytes a second
)

// Pace bounds the time of a blob transfer by its size (see above).
type Pace struct {
	Timeout time.Duration // default DefaultBlobTimeout
	Rate    int64         // bytes a second; default DefaultBlobRate
}

func (p Pace) orDefault() Pace {
	if p.Timeout <= 0 {
		p.Timeout = DefaultBlobTimeout
	}
	if p.Rate <= 0 {
		p.Rate = DefaultBlobRate
	}
	return p
}

// DeadlineError is a blob transfer that overran its Pace.
type DeadlineError struct {
	Blob  string
	Bytes int64         // moved when it failed
	After time.Duration // since it began
	Pace  Pace
}

func (e *DeadlineError) Error() string {
	return fmt.Sprintf("blob %s: past its deadline after %s, %d bytes moved (a blob transfer gets %s plus 1 s per %d bytes)",
		e.Blob, e.After.Round(time.Millisecond), e.Bytes, e.Pace.Timeout, e.Pace.Rate)
}

// Unwrap makes a DeadlineError an os.ErrDeadlineExceeded.
func (e *DeadlineError) Unwrap() error { return os.ErrDeadlineExceeded }

// watch trips once a transfer overruns its pace: it records why and calls
// abort, once.
type watch struct {
	pace  Pace
	name  string
	start time.Time
	n     atomic.Int64
	abort func(error)

	mu      sync.Mutex
	timer   *time.Timer
	done    bool
	tripped error
}

func (p Pace) watch(name string, abort func(error)) *watch {
	w := &watch{pace: p, name: name, start: time.Now(), abort: abort}
	w.mu.Lock()
	w.timer = time.AfterFunc(p.Timeout, w.check)
	w.mu.Unlock()
	return w
}

func (w *watch) add(n int) { w.n.Add(int64(n)) }

// check trips the watch if the transfer is past its deadline, or looks
// again at the deadline its bytes moved it to.
func (w *watch) check() {
	n := w.n.Load()
	earned := time.Duration(min(float64(n)/float64(w.pace.Rate)*float64(time.Second), 1<<62))
	left := time.Until(w.start.Add(w.pace.Timeout + earned))
	w.mu.Lock()
	if w.done {
		w.mu.Unlock()
		return
	}
	if left > 0 {
		w.timer.Reset(left)
		w.mu.Unlock()
		return
	}
	w.done = true
	err := &DeadlineError{Blob: w.name, Bytes: n, After: time.Since(w.start), Pace: w.pace}
	w.tripped = err
	w.mu.Unlock()
	w.abort(err)
}

// trip fails the transfer with err now (the first cause wins).
func (w *watch) trip(err error) {
	w.mu.Lock()
	if w.done {
		w.mu.Unlock()
		return
	}
	w.done = true
	w.timer.Stop()
	w.tripped = err
	w.mu.Unlock()
	w.abort(err)
}

// stop ends the watch; err is why it tripped, if it did.
func (w *watch) stop() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done = true
	w.timer.Stop()
	return w.tripped
}

func (w *watch) err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.tripped
}

// PutBlob stores r's bytes at the parent under name, with the default
// Pace (see Pace.Put).
func PutBlob(ctx context.Context, o Opener, name string, r io.Reader) error {
	return Pace{}.Put(ctx, o, name, r)
}

// GetBlob reads the blob name from the parent, with the default Pace (see
// Pace.Get); the caller closes it.
func GetBlob(ctx context.Context, o Opener, name string) (io.ReadCloser, error) {
	return Pace{}.Get(ctx, o, name)
}

// Put stores r's bytes at the parent under name and waits for it to say
// they are on disk. Past its deadline, or once ctx ends, the parent is
// told to drop them and Put returns at once; a Read of r still under way
// then ends when r's does (close r, a pipe, to end it).
func (p Pace) Put(ctx context.Context, o Opener, name string, r io.Reader) error {
	p = p.orDefault()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	w := p.watch(name, cancel)
	defer w.stop()
	st, err := o.Open(ctx, link.BlobPut, name)
	if err != nil {
		if c := w.err(); c != nil {
			return c
		}
		return err
	}
	sent := make(chan error, 1)
	go func() { sent <- send(st, r, w) }()
	select {
	case err = <-sent:
	case <-ctx.Done():
		err = context.Cause(ctx)
	}
	if tripped := w.stop(); err != nil && tripped != nil {
		err = tripped
	}
	if err != nil {
		st.Reset("blob put abandoned by the enclave: " + err.Error())
		var de *DeadlineError
		if errors.As(err, &de) {
			return err
		}
		return fmt.Errorf("blob %s: %w", name, err)
	}
	st.Close()
	return nil
}

// send copies r to st, then waits for the parent's answer.
func send(st *link.Stream, r io.Reader, w *watch) error {
	if _, err := io.Copy(progress{st, w}, r); err != nil {
		return err
	}
	st.CloseWrite()
	b, err := io.ReadAll(io.LimitReader(st, link.MaxReason))
	if err != nil {
		return err
	}
	if string(b) != link.BlobOK {
		return fmt.Errorf("parent says %q", string(b))
	}
	return nil
}

// progress counts what is written through it.
type progress struct {
	w io.Writer
	p *watch
}

func (p progress) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.p.add(n)
	return n, err
}

// Get reads the blob name from the parent; the caller closes it. Past its
// deadline, or once ctx ends, reads fail with why (a *DeadlineError, or
// ctx's error) and the parent stops sending.
func (p Pace) Get(ctx context.Context, o Opener, name string) (io.ReadCloser, error) {
	p = p.orDefault()
	var st *link.Stream
	var mu sync.Mutex
	reset := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if st != nil {
			st.Reset("blob get abandoned by the enclave: " + err.Error())
		}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	w := p.watch(name, func(err error) { cancel(err); reset(err) })
	s, err := o.Open(ctx, link.BlobGet, name)
	if err != nil {
		cancel(nil)
		if c := w.stop(); c != nil {
			return nil, c
		}
		return nil, err
	}
	mu.Lock()
	st = s
	mu.Unlock()
	stop := context.AfterFunc(ctx, func() { w.trip(fmt.Errorf("blob %s: %w", name, context.Cause(ctx))) })
	return &blobReader{st: s, w: w, stop: func() { stop(); cancel(nil) }}, nil
}

// blobReader is a blob coming from the parent, under its deadline.
type blobReader struct {
	st   *link.Stream
	w    *watch
	stop func()
	once sync.Once
}

func (b *blobReader) Read(p []byte) (int, error) {
	n, err := b.st.Read(p)
	b.w.add(n)
	switch {
	case errors.Is(err, io.EOF):
		b.w.stop()
	case err != nil:
		if c := b.w.err(); c != nil {
			err = c
		}
	}
	return n, err
}

// Close ends the read; the parent stops sending what is left.
func (b *blobReader) Close() error {
	b.once.Do(func() {
		b.w.stop()
		b.stop()
		b.st.Reset("blob get closed by the enclave")
	})
	return nil
}

// Blobs is the parent's blob store as package backup uses it.
type Blobs struct {
	Link Opener
	Pace Pace // the deadline of each transfer
}

// Put stores r's bytes as name.
func (b Blobs) Put(ctx context.Context, name string, r io.Reader) error {
	return b.Pace.Put(ctx, b.Link, name, r)
}

// Get reads the blob name; a blob the parent does not have is an error
// wrapping os.ErrNotExist.
func (b Blobs) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	rc, err := b.Pace.Get(ctx, b.Link, name)
	var re *link.RefusedError
	if errors.As(err, &re) && re.Reason == "not found" {
		return nil, fmt.Errorf("blob %s: %w", name, os.ErrNotExist)
	}
	return rc, err
}
