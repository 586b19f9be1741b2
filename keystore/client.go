package keystore

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/verify"
)

// Client calls a key store over relays. It runs inside the instance's
// enclave; its requests carry a fresh attestation of its request key.
type Client struct {
	Server string   // the key store's hex pubkey
	Relays []string // where the key store listens
	Pool   *nostr.SimplePool
	// Keys is the request key; Attest returns a fresh attestation
	// document whose public_key is that key's (32 bytes).
	Keys   nostr.Keyer
	Attest func(ctx context.Context, publicKey []byte) ([]byte, error)
	// Timeout bounds one attempt (default 10 s); Attempts is how many
	// are made before giving up (default 3).
	Timeout  time.Duration
	Attempts int
	// Now stamps requests (default time.Now).
	Now func() time.Time
	// Input (optional) is what this enclave offers to satisfy a secret's
	// policy (a ref and release signatures), sent with the checkpoints it
	// records: recording needs what getting the keys needs.
	Input *Input
}

// RemoteError is an error the key store answered.
type RemoteError struct {
	Method string
	Text   string
}

func (e *RemoteError) Error() string { return "key store " + e.Method + ": " + e.Text }

// IsNotFound says whether err is the key store's "Not found".
func IsNotFound(err error) bool {
	var re *RemoteError
	return errors.As(err, &re) && strings.HasPrefix(re.Text, ErrNotFound)
}

// Get fetches the secret this enclave may have.
func (c *Client) Get(ctx context.Context, in *Input) (string, error) {
	res, err := c.attestedCall(ctx, "get", Params{Input: in})
	if err != nil {
		return "", err
	}
	var s string
	if err := json.Unmarshal(res, &s); err != nil {
		return "", fmt.Errorf("key store get: result is not a string")
	}
	return s, nil
}

// Has says whether Get would find a secret.
func (c *Client) Has(ctx context.Context, in *Input) (bool, error) {
	res, err := c.attestedCall(ctx, "has", Params{Input: in})
	if err != nil {
		return false, err
	}
	var ok bool
	if err := json.Unmarshal(res, &ok); err != nil {
		return false, fmt.Errorf("key store has: result is not true or false")
	}
	return ok, nil
}

// Set stores data for this enclave's build, under policy (optional; in
// must satisfy it).
func (c *Client) Set(ctx context.Context, data string, policy *Policy, in *Input) error {
	_, err := c.attestedCall(ctx, "set", Params{Data: data, Policy: policy, Input: in})
	return err
}

// RecordCheckpoint has the key store record a signed backup checkpoint,
// with a fresh attestation of the request key (and Input): only an enclave
// that may have a secret there records. It fails if the store holds a
// newer checkpoint.
func (c *Client) RecordCheckpoint(ctx context.Context, evt nostr.Event) error {
	_, err := c.attestedCall(ctx, "checkpoint", Params{Event: &evt, Input: c.Input})
	return err
}

// NewestCheckpoint is the newest checkpoint the key store recorded for
// instance (hex pubkey), or nil if none.
func (c *Client) NewestCheckpoint(ctx context.Context, instance string) (*nostr.Event, error) {
	res, err := c.Call(ctx, "checkpoint", Params{Pubkey: instance})
	if IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var e nostr.Event
	if err := json.Unmarshal(res, &e); err != nil {
		return nil, errors.New("key store checkpoint: result is not an event")
	}
	return &e, nil
}

func (c *Client) attestedCall(ctx context.Context, method string, p Params) (json.RawMessage, error) {
	pk, err := c.Keys.GetPublicKey(ctx)
	if err != nil {
		return nil, err
	}
	raw, _ := hex.DecodeString(pk)
	doc, err := c.Attest(ctx, raw)
	if err != nil {
		return nil, fmt.Errorf("key store %s: attest the request key: %w", method, err)
	}
	p.Attestation = base64.StdEncoding.EncodeToString(doc)
	return c.Call(ctx, method, p)
}

// Call sends one request and waits for its reply, trying again on
// silence; the key store's own errors come back as *RemoteError.
func (c *Client) Call(ctx context.Context, method string, p Params) (json.RawMessage, error) {
	timeout, attempts := c.Timeout, c.Attempts
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	if attempts <= 0 {
		attempts = 3
	}
	pk, err := c.Keys.GetPublicKey(ctx)
	if err != nil {
		return nil, err
	}
	params, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	var idb [12]byte
	rand.Read(idb[:])
	req, _ := json.Marshal(Request{ID: hex.EncodeToString(idb[:]), Method: method, Params: params})
	ct, err := c.Keys.Encrypt(ctx, string(req), c.Server)
	if err != nil {
		return nil, err
	}
	var last error
	for range attempts {
		res, err := c.attempt(ctx, pk, hex.EncodeToString(idb[:]), ct, timeout)
		if err == nil || ctx.Err() != nil {
			return res, err
		}
		var re *RemoteError
		if errors.As(err, &re) {
			re.Method = method
			return nil, re
		}
		last = err
	}
	return nil, fmt.Errorf("key store %s: %w", method, last)
}

func (c *Client) attempt(ctx context.Context, pk, id, ct string, timeout time.Duration) (json.RawMessage, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	since := nostr.Timestamp(now().Add(-time.Minute).Unix())
	eose := make(chan struct{})
	replies := c.Pool.SubscribeManyNotifyEOSE(ctx, c.Relays, nostr.Filter{
		Kinds: []int{Kind}, Authors: []string{c.Server}, Tags: nostr.TagMap{"p": {pk}}, Since: &since,
	}, eose)
	select {
	case <-eose:
	case <-ctx.Done():
		return nil, errors.New("no relay answered the subscription")
	}
	evt := nostr.Event{Kind: Kind, CreatedAt: nostr.Timestamp(now().Unix()), Tags: nostr.Tags{{"p", c.Server}}, Content: ct}
	if err := c.Keys.SignEvent(ctx, &evt); err != nil {
		return nil, err
	}
	published := false
	var errs []error
	for r := range c.Pool.PublishMany(ctx, c.Relays, evt) {
		if r.Error == nil {
			published = true
		} else {
			errs = append(errs, r.Error)
		}
	}
	if !published {
		return nil, fmt.Errorf("no relay took the request: %w", errors.Join(errs...))
	}
	for re := range replies {
		plain, err := c.Keys.Decrypt(ctx, re.Event.Content, c.Server)
		if err != nil {
			continue
		}
		var r Reply
		if json.Unmarshal([]byte(plain), &r) != nil || r.ID != id {
			continue
		}
		if r.Error != "" {
			return nil, &RemoteError{Text: r.Error}
		}
		return r.Result, nil
	}
	return nil, errors.New("no reply in time")
}

// DocumentVerifier checks attestation documents as `enclaved verify`
// does (chain to the AWS Nitro root, or to a dev root where opt allows;
// debug enclaves refused).
func DocumentVerifier(opt verify.Options) Verifier {
	return func(doc []byte, at time.Time) (Attested, error) {
		o := opt
		o.At, o.AllowDebug = at, false
		r := verify.Document(doc, o)
		if !r.OK || r.Document == nil {
			var failed []string
			for _, c := range r.Checks {
				if !c.OK {
					failed = append(failed, c.Name+": "+c.Detail)
				}
			}
			return Attested{}, errors.New(strings.Join(failed, "; "))
		}
		d := r.Document
		return Attested{PublicKey: d.PublicKey, PCRs: d.PCRs, Timestamp: time.UnixMilli(int64(d.Timestamp))}, nil
	}
}
