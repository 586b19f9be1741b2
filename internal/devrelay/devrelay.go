// Package devrelay runs an embedded Nostr relay (khatru) on a local address,
// for dev mode and for tests.
//
// It is outside the trust boundary and outside production: a real instance
// talks to public relays through the parent's egress. Events are kept in a
// SQLite file (eventstore/sqlite3) when a path is given, else in memory.
package devrelay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/fiatjaf/eventstore"
	"github.com/fiatjaf/eventstore/slicestore"
	"github.com/fiatjaf/eventstore/sqlite3"
	"github.com/fiatjaf/khatru"
)

// Relay is a running embedded relay.
type Relay struct {
	// URL is the relay's ws:// address.
	URL string
	// Khatru and Store are the relay and its event store, for tests that
	// need to step between the two (a relay's own races).
	Khatru *khatru.Relay
	Store  eventstore.Store

	srv  *http.Server
	done chan error
}

// Start listens on addr (host:port; port 0 picks a free one) and serves a
// relay whose events are stored at dbPath, or in memory if dbPath is "".
func Start(addr, dbPath string) (*Relay, error) {
	var store eventstore.Store = &slicestore.SliceStore{}
	if dbPath != "" {
		if err := os.MkdirAll(filepath.Dir(dbPath), 0o700); err != nil {
			return nil, fmt.Errorf("relay store: %w", err)
		}
		store = &sqlite3.SQLite3Backend{DatabaseURL: dbPath}
	}
	if err := store.Init(); err != nil {
		return nil, fmt.Errorf("relay store: %w", err)
	}
	rl := khatru.NewRelay()
	rl.Info.Name = "enclaved dev relay"
	rl.Info.Description = "embedded relay of an enclaved dev instance"
	rl.StoreEvent = append(rl.StoreEvent, store.SaveEvent)
	rl.QueryEvents = append(rl.QueryEvents, store.QueryEvents)
	rl.DeleteEvent = append(rl.DeleteEvent, store.DeleteEvent)
	rl.ReplaceEvent = append(rl.ReplaceEvent, store.ReplaceEvent)
	if c, ok := store.(eventstore.Counter); ok {
		rl.CountEvents = append(rl.CountEvents, c.CountEvents)
	}

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("relay listen: %w", err)
	}
	r := &Relay{
		URL:    "ws://" + ln.Addr().String(),
		Khatru: rl,
		Store:  store,
		srv:    &http.Server{Handler: rl, ReadHeaderTimeout: 10 * time.Second},
		done:   make(chan error, 1),
	}
	go func() { r.done <- r.srv.Serve(ln) }()
	return r, nil
}

// Close stops the relay, dropping open connections, and closes its store.
func (r *Relay) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := r.srv.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = r.srv.Close() // websockets do not end on Shutdown
	}
	if serveErr := <-r.done; !errors.Is(serveErr, http.ErrServerClosed) {
		err = errors.Join(err, serveErr)
	}
	r.Store.Close()
	return err
}
