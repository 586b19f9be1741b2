package tunnel

import (
	"bytes"
	"context"
	"sync/atomic"
	"time"

	"github.com/enclaved/enclaved/internal/backoff"
	"github.com/enclaved/enclaved/link"
)

// LogWriter sends log lines to the parent's log sink. Write never blocks
// the logger: lines wait in a bounded queue while the link is down, and
// the oldest are dropped (and counted) when it is full. What it sends has
// already been through the logger's redaction; the parent is untrusted.
type LogWriter struct {
	queue   chan []byte
	dropped atomic.Int64
}

// NewLogWriter starts sending to o until ctx ends.
func NewLogWriter(ctx context.Context, o Opener) *LogWriter {
	w := &LogWriter{queue: make(chan []byte, 1024)}
	go w.run(ctx, o)
	return w
}

// Write queues one or more log lines.
func (w *LogWriter) Write(p []byte) (int, error) {
	line := bytes.Clone(p)
	for {
		select {
		case w.queue <- line:
			return len(p), nil
		default:
		}
		select { // full: drop the oldest
		case <-w.queue:
			w.dropped.Add(1)
		default:
		}
	}
}

// Dropped is how many lines were dropped while the queue was full.
func (w *LogWriter) Dropped() int64 { return w.dropped.Load() }

func (w *LogWriter) run(ctx context.Context, o Opener) {
	var st *link.Stream
	defer func() {
		if st != nil {
			st.Close()
		}
	}()
	for {
		var line []byte
		select {
		case <-ctx.Done():
			return
		case line = <-w.queue:
		}
		for st == nil || !w.send(st, line) {
			if st != nil {
				st.Close()
				st = nil
			}
			s, err := o.Open(ctx, link.Log, "")
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				if backoff.Sleep(ctx, time.Second) != nil {
					return
				}
				continue
			}
			st = s
		}
	}
}

func (w *LogWriter) send(st *link.Stream, line []byte) bool {
	st.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := st.Write(line)
	return err == nil
}
