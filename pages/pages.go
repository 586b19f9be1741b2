// Package pages serves the instance's web pages for people: the front page
// (GET /: what this instance is, whether it runs in a real enclave, its
// PCRs and the signatures it carries, prices and free capacity, how to rent
// it, its egress policy) and each container's public page (GET /c/{name}:
// state, image, balance and time left, and how anyone tops it up). They are
// rendered on the server with html/template: inline CSS and inline SVG QR
// codes, no JavaScript and no external assets, since the enclave reaches
// nothing else and a reader should not have to run code to read them.
//
// It runs inside the enclave, behind the instance's public HTTP server. It
// shows only public facts, read through the small interfaces below from the
// sources the announcement and the HTTP API use: never an owner's pubkey,
// env or logs. It must not import the parent or test tooling.
package pages

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/deployer"
	"github.com/enclaved/enclaved/httpapi"
	"github.com/enclaved/enclaved/records"
)

// Announcer gives the instance's kind-13793 announcement as it publishes
// it (enclave.Instance): the front page shows what explorers read. An
// instance without an attester gives it unsigned, with no attestation.
type Announcer interface {
	Announcement(ctx context.Context) (nostr.Event, error)
}

// Containers finds a container by name or npub (records.Store). It
// returns records.ErrNotFound for an unknown one and a *records.UserError
// for a malformed npub.
type Containers interface {
	Find(ctx context.Context, target string) (records.Record, error)
}

// Reach says where a container is reached from outside (deployer.Deployer):
// its lightning address while it can be zapped, its own page while it
// serves HTTP.
type Reach interface {
	Links(rec records.Record) deployer.Links
}

// LNURLs gives the bech32 LNURL (LUD-01) of a container's LNURL-pay
// endpoint (zaps.Service).
type LNURLs interface {
	LNURL(name string) string
}

// Site is the instance's web pages.
type Site struct {
	// Info is the instance's public facts, as GET /api/v1/instance gives
	// them (npub, relays, unit).
	Info       httpapi.Instance
	Announcer  Announcer
	Containers Containers
	Reach      Reach
	LNURLs     LNURLs
	Now        func() time.Time
	Log        *slog.Logger
}

// Routes adds GET / and GET /c/{name} to mux.
func (s *Site) Routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", s.front)
	mux.HandleFunc("GET /c/{name}", s.container)
}

func (s *Site) front(w http.ResponseWriter, r *http.Request) {
	evt, err := s.Announcer.Announcement(r.Context())
	if err != nil {
		s.failed(w, r, "announcement", err)
		return
	}
	v, err := frontPage(s.Info, evt)
	if err != nil {
		s.failed(w, r, "front page", err)
		return
	}
	s.render(w, http.StatusOK, "front", v)
}

// maxTarget bounds what /c/{name} looks up: a name (32) or an npub (63).
const maxTarget = 100

func (s *Site) container(w http.ResponseWriter, r *http.Request) {
	target := r.PathValue("name")
	if len(target) > maxTarget {
		s.notFound(w, target[:maxTarget]+"…")
		return
	}
	rec, err := s.Containers.Find(r.Context(), target)
	var ue *records.UserError
	switch {
	case errors.Is(err, records.ErrNotFound), errors.As(err, &ue):
		s.notFound(w, target)
		return
	case err != nil:
		s.failed(w, r, "container lookup", err)
		return
	}
	if !public(rec.State) {
		s.notFound(w, target)
		return
	}
	links := s.Reach.Links(rec)
	lnurl := ""
	if links.Address != "" {
		lnurl = s.LNURLs.LNURL(rec.Name)
	}
	v, err := containerPage(s.Info, rec, links, lnurl, s.Now())
	if err != nil {
		s.failed(w, r, "container page", err)
		return
	}
	s.render(w, http.StatusOK, "container", v)
}

// public says whether a container in state has a page: not a quote (paid
// or not), nor one that is gone.
func public(state string) bool {
	switch state {
	case records.StateQuoted, records.StateExpired, records.StateRemoved:
		return false
	}
	return true
}

func (s *Site) notFound(w http.ResponseWriter, target string) {
	s.render(w, http.StatusNotFound, "notfound", notFoundView{page: page{Title: "Not here"}, Target: target, Npub: s.Info.Npub})
}

// failed logs err (once, here at the edge) and answers a 500 page that
// says nothing of it.
func (s *Site) failed(w http.ResponseWriter, r *http.Request, what string, err error) {
	if r.Context().Err() == nil {
		s.Log.Warn("page failed", "what", what, "path", r.URL.Path, "err", err)
	}
	s.render(w, http.StatusInternalServerError, "error", page{Title: "Unavailable"})
}

// render executes the template name into a buffer first, so a failure is
// a clean 500 rather than half a page.
func (s *Site) render(w http.ResponseWriter, status int, name string, v any) {
	var b bytes.Buffer
	if err := templates.ExecuteTemplate(&b, name, v); err != nil {
		s.Log.Error("page template failed", "page", name, "err", err)
		http.Error(w, "page unavailable", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	// No script runs on these pages, and nothing is loaded from anywhere:
	// styles are inline, QR codes inline SVG.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store") // balances and capacity change
	w.WriteHeader(status)
	w.Write(b.Bytes())
}
