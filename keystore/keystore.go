// Package keystore is enclaved's key store: a keycrux-compatible service
// that keeps one small secret per enclave image and EC2 instance and gives
// it back only to an attested enclave that may have it. Requests and
// replies are kind-29525 events whose content is NIP-44 encrypted JSON
// ({id,method,params} / {id,result,error}); the methods are keycrux's set,
// get and has, plus checkpoint, which records each instance's newest
// backup checkpoint so that a restore can tell a replayed backup from the
// newest one.
//
// Release policy (see Policy): a secret is given to a requester whose
// fresh attestation, bound to the request's key, has the same PCR0/1/2/4
// as the enclave that stored it (a restart), or the same PCR4 (the same
// EC2 instance) and PCR0/1/2 that the secret's maintainers signed in
// release events naming the secret's ref (an upgrade). Debug enclaves
// (PCR0/1/2 all zero, memory readable by the host) get nothing.
//
// The server runs in its own enclave (`enclaved keystore`); the Client
// runs in the instance's enclave. Secrets cross relays and parents only
// NIP-44 encrypted to an attested key. Like keycrux, the server keeps
// secrets in memory for a limited time (TTL): clients set them again on a
// schedule.
package keystore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/nip"
)

// Kind is the request and reply kind (keycrux's KIND_KEY_RPC).
const Kind = 29525

// Limits on what a request may carry.
const (
	MaxContent = 64 << 10 // encrypted request content
	MaxData    = 1024     // a stored secret, as in keycrux
	MaxSigs    = 32       // release signatures in an input
)

// ErrNotFound is the error text of a get with no releasable secret, as
// keycrux words it.
const ErrNotFound = "Not found"

// Request is the decrypted content of a request.
type Request struct {
	ID     string          `json:"id"`
	Method string          `json:"method"`
	Params json.RawMessage `json:"params"`
}

// Reply is the decrypted content of a reply.
type Reply struct {
	ID     string          `json:"id"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  string          `json:"error,omitempty"`
}

// Params are the parameters of every method; each uses some.
type Params struct {
	// Attestation is the requester's base64 attestation document, whose
	// public_key is the request's pubkey (set, get, has).
	Attestation string  `json:"attestation,omitempty"`
	Data        string  `json:"data,omitempty"`   // set: the secret
	Policy      *Policy `json:"policy,omitempty"` // set
	Input       *Input  `json:"input,omitempty"`  // set (with a policy), get, has
	// Event is a backup checkpoint to record; Pubkey asks for the newest
	// one recorded for that instance (checkpoint).
	Event  *nostr.Event `json:"event,omitempty"`
	Pubkey string       `json:"pubkey,omitempty"`
}

// Input is what a requester offers to satisfy a policy.
type Input struct {
	Ref               string        `json:"ref"`
	ReleaseSignatures []nostr.Event `json:"release_signatures,omitempty"`
}

// Attested is what a verified attestation document says.
type Attested struct {
	PublicKey []byte
	PCRs      map[uint][]byte
	Timestamp time.Time
}

// Verifier checks an attestation document's signature chain at a time and
// returns its contents. It must refuse debug enclaves.
type Verifier func(doc []byte, at time.Time) (Attested, error)

// Server answers key store requests.
type Server struct {
	Keys   nostr.Keyer
	Verify Verifier
	Now    func() time.Time
	// TTL is how long a secret or checkpoint is kept after it was last
	// set (default 72 h, as keycrux).
	TTL time.Duration
	// MaxAge bounds how old a request's attestation and created_at may be
	// (default 10 min).
	MaxAge time.Duration
	// MaxEntries bounds stored secrets and checkpoints (default 100,000).
	MaxEntries int
	Log        *slog.Logger

	mu          sync.Mutex
	self        string
	entries     map[string]*entry // by slot
	checkpoints map[string]stored // by instance pubkey
	seen        map[string]time.Time
}

type entry struct {
	pcrs    [3]string // PCR0/1/2 hex
	pcr4    string
	data    string
	policy  *Policy
	expires time.Time
}

type stored struct {
	evt     nostr.Event
	seq     uint64
	expires time.Time
}

func (s *Server) init(ctx context.Context) error {
	if s.entries != nil {
		return nil
	}
	if s.Now == nil {
		s.Now = time.Now
	}
	if s.TTL <= 0 {
		s.TTL = 72 * time.Hour
	}
	if s.MaxAge <= 0 {
		s.MaxAge = 10 * time.Minute
	}
	if s.MaxEntries <= 0 {
		s.MaxEntries = 100_000
	}
	if s.Log == nil {
		s.Log = slog.New(slog.DiscardHandler)
	}
	pk, err := s.Keys.GetPublicKey(ctx)
	if err != nil {
		return err
	}
	s.self, s.entries, s.checkpoints, s.seen = pk, map[string]*entry{}, map[string]stored{}, map[string]time.Time{}
	return nil
}

// Pubkey is the server's hex public key.
func (s *Server) Pubkey(ctx context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.init(ctx); err != nil {
		return "", err
	}
	return s.self, nil
}

// Handle answers one request event. It returns nil for events it ignores:
// not a signed request to this server, or one already answered.
func (s *Server) Handle(ctx context.Context, evt *nostr.Event) *nostr.Event {
	s.mu.Lock()
	if err := s.init(ctx); err != nil {
		s.mu.Unlock()
		s.Log.Error("key store keys", "err", err)
		return nil
	}
	now := s.Now()
	if evt.Kind != Kind || !slices.ContainsFunc(evt.Tags, func(t nostr.Tag) bool { return len(t) >= 2 && t[0] == "p" && t[1] == s.self }) ||
		evt.PubKey == s.self || len(evt.Content) > MaxContent {
		s.mu.Unlock()
		return nil
	}
	if _, dup := s.seen[evt.ID]; dup {
		s.mu.Unlock()
		return nil
	}
	if ok, _ := evt.CheckSignature(); !ok || evt.GetID() != evt.ID {
		s.mu.Unlock()
		return nil
	}
	s.seen[evt.ID] = now
	s.gc(now)
	s.mu.Unlock()

	plain, err := s.Keys.Decrypt(ctx, evt.Content, evt.PubKey)
	if err != nil {
		return s.reply(ctx, evt.PubKey, Reply{Error: "cannot decrypt the request (NIP-44 to the key store's pubkey)"})
	}
	var req Request
	if err := json.Unmarshal([]byte(plain), &req); err != nil {
		return s.reply(ctx, evt.PubKey, Reply{Error: "the request is not JSON {id, method, params}"})
	}
	res := Reply{ID: req.ID}
	if d := now.Sub(evt.CreatedAt.Time()); d > s.MaxAge || d < -s.MaxAge {
		res.Error = fmt.Sprintf("request created_at is %s away from now (at most %s)", d.Round(time.Second), s.MaxAge)
		return s.reply(ctx, evt.PubKey, res)
	}
	var p Params
	if len(req.Params) > 0 {
		if err := json.Unmarshal(req.Params, &p); err != nil {
			res.Error = "params: " + err.Error()
			return s.reply(ctx, evt.PubKey, res)
		}
	}
	result, err := s.call(req.Method, evt.PubKey, p, now)
	if err != nil {
		res.Error = err.Error()
		s.Log.Info("key store request refused", "method", req.Method, "from", nip.Npub(evt.PubKey), "reason", err)
	} else {
		res.Result, _ = json.Marshal(result)
		s.Log.Info("key store request", "method", req.Method, "from", nip.Npub(evt.PubKey))
	}
	return s.reply(ctx, evt.PubKey, res)
}

func (s *Server) reply(ctx context.Context, to string, r Reply) *nostr.Event {
	b, _ := json.Marshal(r)
	ct, err := s.Keys.Encrypt(ctx, string(b), to)
	if err != nil {
		s.Log.Warn("key store reply", "err", err)
		return nil
	}
	evt := &nostr.Event{Kind: Kind, CreatedAt: nostr.Timestamp(s.Now().Unix()), Tags: nostr.Tags{{"p", to}}, Content: ct}
	if err := s.Keys.SignEvent(ctx, evt); err != nil {
		s.Log.Warn("key store reply", "err", err)
		return nil
	}
	return evt
}

// gc drops expired secrets, checkpoints and remembered request ids.
func (s *Server) gc(now time.Time) {
	for k, e := range s.entries {
		if now.After(e.expires) {
			delete(s.entries, k)
		}
	}
	for k, c := range s.checkpoints {
		if now.After(c.expires) {
			delete(s.checkpoints, k)
		}
	}
	for id, at := range s.seen {
		if now.Sub(at) > 2*s.MaxAge {
			delete(s.seen, id)
		}
	}
}

func (s *Server) call(method, from string, p Params, now time.Time) (any, error) {
	switch method {
	case "set", "get", "has":
	case "checkpoint":
		if p.Event == nil {
			return s.newestCheckpoint(p.Pubkey)
		}
	default:
		return nil, fmt.Errorf("unknown method %q (set, get, has, checkpoint)", method)
	}
	a, err := s.attested(p.Attestation, from, now)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch method {
	case "checkpoint":
		// Recording needs what getting the keys needs: an attested
		// enclave that may have a secret here.
		if _, err := s.get(a, p); err != nil {
			return nil, fmt.Errorf("checkpoint: the requester may have no secret here: %w", err)
		}
		return s.checkpoint(p, now)
	case "set":
		return s.set(a, p, now)
	case "has":
		_, err := s.get(a, p)
		var nf *notFoundError
		if errors.As(err, &nf) {
			return false, nil
		}
		return err == nil, err
	default:
		return s.get(a, p)
	}
}

// attested verifies the requester's attestation: chain, freshness, and
// that it binds the request's key.
func (s *Server) attested(b64, from string, now time.Time) (Attested, error) {
	if b64 == "" {
		return Attested{}, errors.New("no attestation")
	}
	doc, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return Attested{}, errors.New("attestation is not base64")
	}
	a, err := s.Verify(doc, now)
	if err != nil {
		return Attested{}, fmt.Errorf("attestation: %w", err)
	}
	if hex.EncodeToString(a.PublicKey) != from {
		return Attested{}, errors.New("attestation: its public_key is not the request's pubkey")
	}
	if d := now.Sub(a.Timestamp); d > s.MaxAge || d < -s.MaxAge {
		return Attested{}, fmt.Errorf("attestation: made %s ago, not fresh (at most %s)", d.Round(time.Second), s.MaxAge)
	}
	for _, i := range []uint{0, 1, 2, 4} {
		if len(a.PCRs[i]) == 0 {
			return Attested{}, fmt.Errorf("attestation: no PCR%d", i)
		}
	}
	if zero(a.PCRs[0]) && zero(a.PCRs[1]) && zero(a.PCRs[2]) {
		return Attested{}, errors.New("attestation: a debug enclave (PCR0/1/2 all zero) gets no secrets")
	}
	return a, nil
}

func zero(b []byte) bool { return bytes.Equal(b, make([]byte, len(b))) }

func pcrs012(a Attested) [3]string {
	return [3]string{hex.EncodeToString(a.PCRs[0]), hex.EncodeToString(a.PCRs[1]), hex.EncodeToString(a.PCRs[2])}
}

// slot is where a build on an EC2 instance keeps its secret.
func slot(p [3]string, pcr4 string) string {
	h := sha256.Sum256([]byte(strings.Join([]string{p[0], p[1], p[2], pcr4}, "_")))
	return hex.EncodeToString(h[:])
}

func (s *Server) set(a Attested, p Params, now time.Time) (any, error) {
	if p.Data == "" || len(p.Data) > MaxData {
		return nil, fmt.Errorf("data: want 1 to %d bytes", MaxData)
	}
	if p.Policy != nil {
		if p.Input == nil {
			return nil, errors.New("a policy needs an input that satisfies it")
		}
		if err := p.Policy.valid(); err != nil {
			return nil, err
		}
		// The setter must itself satisfy its policy: its maintainers have
		// signed the build that hands the secret on.
		if err := p.Policy.allows(pcrs012(a), *p.Input); err != nil {
			return nil, fmt.Errorf("policy check failed: %w", err)
		}
	}
	e := &entry{pcrs: pcrs012(a), pcr4: hex.EncodeToString(a.PCRs[4]), data: p.Data, policy: p.Policy, expires: now.Add(s.TTL)}
	k := slot(e.pcrs, e.pcr4)
	if _, ok := s.entries[k]; !ok && len(s.entries) >= s.MaxEntries {
		return nil, errors.New("key store full")
	}
	s.entries[k] = e
	return "ok", nil
}

// get finds the secret the requester may have: its own build's, else one
// of the same EC2 instance whose policy its input satisfies.
func (s *Server) get(a Attested, p Params) (string, error) {
	mine, pcr4 := pcrs012(a), hex.EncodeToString(a.PCRs[4])
	if e, ok := s.entries[slot(mine, pcr4)]; ok {
		return e.data, nil
	}
	var reasons []string
	for _, e := range s.entries {
		if e.pcr4 != pcr4 || e.policy == nil {
			continue
		}
		if p.Input == nil {
			reasons = append(reasons, "a secret of another build needs an input (ref and release signatures)")
			continue
		}
		if err := e.policy.allows(mine, *p.Input); err != nil {
			reasons = append(reasons, err.Error())
			continue
		}
		return e.data, nil
	}
	slices.Sort(reasons)
	return "", &notFoundError{slices.Compact(reasons)}
}

// newestCheckpoint is the newest checkpoint recorded for an instance.
func (s *Server) newestCheckpoint(pubkey string) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.checkpoints[pubkey]
	if !ok {
		return nil, errors.New(ErrNotFound)
	}
	return c.evt, nil
}

// checkpoint records a backup checkpoint signed by its instance, if it is
// newer than the one recorded, and returns it. The caller holds s.mu and
// checked the requester's attestation.
func (s *Server) checkpoint(p Params, now time.Time) (any, error) {
	cp, err := nip.ParseCheckpoint(p.Event)
	if err != nil {
		return nil, err
	}
	old, ok := s.checkpoints[p.Event.PubKey]
	switch {
	case ok && cp.Seq < old.seq:
		return nil, fmt.Errorf("checkpoint %d is older than the recorded %d", cp.Seq, old.seq)
	case ok && cp.Seq == old.seq && old.evt.ID != p.Event.ID:
		return nil, fmt.Errorf("another checkpoint %d is recorded (%s)", cp.Seq, old.evt.ID)
	case !ok && len(s.checkpoints) >= s.MaxEntries:
		return nil, errors.New("key store full")
	}
	s.checkpoints[p.Event.PubKey] = stored{evt: *p.Event, seq: cp.Seq, expires: now.Add(s.TTL)}
	return *p.Event, nil
}
