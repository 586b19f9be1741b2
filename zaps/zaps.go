// Package zaps makes containers zap-able: it serves LNURL-pay (LUD-06,
// LUD-16) with NIP-57 for each container's lightning address, and NIP-05
// names for the instance and its containers, and it publishes a zap receipt
// (kind 9735) for every zap that settles, exactly once per payment even
// across crashes (a receipt is rebuilt identically and marked published in
// SQLite only after a relay took it).
//
// It runs inside the enclave. Everything in a request is hostile input:
// amounts, names and zap requests are checked and refused with
// {"status":"ERROR","reason":…}.
package zaps

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/btcsuite/btcd/btcutil/bech32"
	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/billing"
	"github.com/enclaved/enclaved/httpapi"
	"github.com/enclaved/enclaved/nip"
	"github.com/enclaved/enclaved/records"
	"github.com/enclaved/enclaved/store"
)

// Limits of what a zap may pay.
const (
	MinSendableMsat = 1_000               // 1 sat
	MaxSendableMsat = 100_000_000_000     // 1 BTC
	CommentAllowed  = 280                 // LUD-12 comment length (plain LNURL-pay)
	invoiceExpiry   = 10 * time.Minute    // a zap invoice's lifetime
	maxQuery        = 32 << 10            // bytes of query string the callback reads
	receiptTimeout  = 15 * time.Second    // one publication attempt
	nameMaxLen      = 64                  // NIP-05 / LUD-16 local parts
	publishBatch    = 50                  // receipts per PublishPending pass
	metadataPrefix  = "Keep it running: " // text/plain of a container's pay request
)

// Containers is what zaps reads about containers.
type Containers interface {
	Find(ctx context.Context, target string) (records.Record, error)
}

// Issuer issues invoices (billing.Invoices): created at the node,
// recorded, and saved before they are handed out.
type Issuer interface {
	Issue(ctx context.Context, r billing.Request) (billing.Invoice, error)
}

// Publisher publishes a signed event to relays; it returns an error unless
// at least one relay took it.
type Publisher func(ctx context.Context, evt nostr.Event, relays []string) error

// Service is the zap side of an instance.
type Service struct {
	DB         *store.DB
	Containers Containers
	Invoices   Issuer
	// BaseURL is the instance's public HTTP origin (https://host in
	// production); the lightning address domain is its host.
	BaseURL *url.URL
	// Instance is the instance's NIP-05 name and hex pubkey.
	InstanceName, InstancePubkey string
	// Zapper signs zap receipts; its pubkey is the LNURL nostrPubkey.
	Zapper nip.Keys
	// Relays are the instance's relays; receipts go there too.
	Relays  []string
	Publish Publisher
	// Reachable (optional) keeps the relays the instance may connect to
	// (the enclave's egress allowlist): receipts go to those of a zap
	// request's relays, and always to the instance's.
	Reachable func(relays []string) []string
	Now       func() time.Time
	Log       *slog.Logger
	// InvoicesPerMinute bounds the invoices callbacks create per client
	// address (an IPv4 address or IPv6 /64) and instance-wide (0: 10
	// and 120); a minute's worth may come at once.
	InvoicesPerClientPerMinute, InvoicesPerMinute int

	limitOnce sync.Once
	limit     *limiter
	backoff   retries // receipts no relay took
}

// Routes adds the LNURL-pay and NIP-05 endpoints to mux.
func (s *Service) Routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /.well-known/lnurlp/{name}", s.payRequest)
	mux.HandleFunc("GET /lnurlp/{name}/callback", s.callback)
	mux.HandleFunc("GET /.well-known/nostr.json", s.nip05)
}

// Domain is the host of lightning addresses and NIP-05 names.
func (s *Service) Domain() string { return s.BaseURL.Host }

// Address is a container's lightning address (LUD-16) and NIP-05 name.
func (s *Service) Address(name string) string { return name + "@" + s.Domain() }

// PayURL is the LNURL-pay endpoint of a name.
func (s *Service) PayURL(name string) string {
	return s.BaseURL.JoinPath(".well-known", "lnurlp", name).String()
}

// LNURL is the bech32 "lnurl1…" form of a name's pay endpoint (LUD-01).
func (s *Service) LNURL(name string) string {
	conv, err := bech32.ConvertBits([]byte(s.PayURL(name)), 8, 5, true)
	if err != nil {
		return ""
	}
	enc, err := bech32.Encode("lnurl", conv)
	if err != nil {
		return ""
	}
	return enc
}

var nameRE = regexp.MustCompile(`^[a-z0-9-_.]{1,64}$`)

// container finds the live container a lightning address names.
func (s *Service) container(ctx context.Context, name string) (records.Record, error) {
	if !nameRE.MatchString(name) {
		return records.Record{}, errors.New("not a valid name")
	}
	rec, err := s.Containers.Find(ctx, name)
	if errors.Is(err, records.ErrNotFound) || (err == nil && !Zappable(rec.State)) {
		return records.Record{}, fmt.Errorf("no container %s here", name)
	}
	if err != nil {
		s.Log.Error("zap lookup", "err", err)
		return records.Record{}, errors.New("lookup failed; try again later")
	}
	if rec.Name != name {
		return records.Record{}, fmt.Errorf("no container %s here", name)
	}
	return rec, nil
}

// Zappable: a container whose balance can still buy running time.
func Zappable(state string) bool {
	switch state {
	case records.StateRemoved, records.StateExpired, records.StateQuoted:
		return false
	}
	return true
}

func (s *Service) metadata(rec records.Record) string {
	b, _ := json.Marshal([][2]string{
		{"text/plain", metadataPrefix + rec.Name + " on " + s.Domain()},
		{"text/identifier", s.Address(rec.Name)},
	})
	return string(b)
}

func (s *Service) payRequest(w http.ResponseWriter, r *http.Request) {
	rec, err := s.container(r.Context(), r.PathValue("name"))
	if err != nil {
		lnurlError(w, http.StatusNotFound, err.Error())
		return
	}
	zapper, err := s.Zapper.GetPublicKey(r.Context())
	if err != nil {
		lnurlError(w, http.StatusInternalServerError, "zaps are unavailable")
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{
		"tag":            "payRequest",
		"callback":       s.BaseURL.JoinPath("lnurlp", rec.Name, "callback").String(),
		"minSendable":    MinSendableMsat,
		"maxSendable":    MaxSendableMsat,
		"metadata":       s.metadata(rec),
		"commentAllowed": CommentAllowed,
		"allowsNostr":    true,
		"nostrPubkey":    zapper,
	})
}

func (s *Service) callback(w http.ResponseWriter, r *http.Request) {
	if len(r.URL.RawQuery) > maxQuery {
		lnurlError(w, http.StatusRequestURITooLong, fmt.Sprintf("query too long (at most %d bytes)", maxQuery))
		return
	}
	rec, err := s.container(r.Context(), r.PathValue("name"))
	if err != nil {
		lnurlError(w, http.StatusNotFound, err.Error())
		return
	}
	q := r.URL.Query()
	amount, err := ParseAmount(q.Get("amount"))
	if err != nil {
		lnurlError(w, http.StatusBadRequest, err.Error())
		return
	}
	if c := q.Get("comment"); len(c) > CommentAllowed {
		lnurlError(w, http.StatusBadRequest, fmt.Sprintf("comment longer than %d characters", CommentAllowed))
		return
	}
	req := billing.Request{ContainerID: rec.ID, Purpose: "lnurl", AmountMsat: amount, Expiry: invoiceExpiry}
	description := s.metadata(rec)
	if raw := q.Get("nostr"); raw != "" {
		z, err := nip.ParseZapRequest(raw, amount, rec.Pubkey, s.LNURL(rec.Name))
		if err != nil {
			lnurlError(w, http.StatusBadRequest, err.Error())
			return
		}
		req.Purpose, req.ZapRequest, req.Requester, description = "zap", z.Raw, z.Sender, z.Raw
	}
	if err := s.limiter().allow(r.RemoteAddr, s.Now()); err != nil {
		lnurlError(w, err.status, err.reason)
		return
	}
	hash := sha256.Sum256([]byte(description))
	req.DescriptionHash = hash[:]
	inv, err := s.Invoices.Issue(r.Context(), req)
	if err != nil {
		s.Log.Error("zap invoice", "container", rec.ID, "err", err)
		lnurlError(w, http.StatusServiceUnavailable, "could not issue an invoice; try again later")
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"pr": inv.Bolt11, "routes": []any{}})
}

// ParseAmount reads the callback's amount parameter (millisatoshis).
func ParseAmount(s string) (int64, error) {
	if s == "" {
		return 0, errors.New("amount is missing (millisatoshis)")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("amount %q is not a whole number of millisatoshis", clip(s, 20))
	}
	if n < MinSendableMsat || n > MaxSendableMsat {
		return 0, fmt.Errorf("amount %d msat is outside %d to %d", n, int64(MinSendableMsat), int64(MaxSendableMsat))
	}
	if n%1000 != 0 {
		// Balances are msat, but many wallets cannot pay sub-sat
		// invoices; refuse early with the reason.
		return 0, fmt.Errorf("amount %d msat is not a whole number of sats", n)
	}
	return n, nil
}

func (s *Service) nip05(w http.ResponseWriter, r *http.Request) {
	name := strings.ToLower(r.URL.Query().Get("name"))
	names := map[string]string{}
	if name == "_" || name == s.InstanceName {
		names[name] = s.InstancePubkey
	} else if rec, err := s.container(r.Context(), name); err == nil {
		names[rec.Name] = rec.Pubkey
	}
	if len(names) == 0 {
		httpapi.WriteJSON(w, http.StatusNotFound, map[string]any{"names": names})
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"names": names})
}

func (s *Service) limiter() *limiter {
	s.limitOnce.Do(func() {
		s.limit = newLimiter(cmp.Or(s.InvoicesPerClientPerMinute, 10), cmp.Or(s.InvoicesPerMinute, 120))
	})
	return s.limit
}

func lnurlError(w http.ResponseWriter, status int, reason string) {
	httpapi.WriteJSON(w, status, map[string]string{"status": "ERROR", "reason": reason})
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
