package keystore_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/attest"
	"github.com/enclaved/enclaved/internal/testenv"
	"github.com/enclaved/enclaved/keystore"
	"github.com/enclaved/enclaved/nip"
)

const repo = "https://github.com/enclaved/enclaved"

type fixture struct {
	t     *testing.T
	clock *testenv.Clock
	*testenv.KeyStore
}

func newFixture(t *testing.T) *fixture {
	c := testenv.NewClock(time.Now()) // the one clock of the test: key store, dev attestors and clients
	return &fixture{t: t, clock: c, KeyStore: testenv.NewKeyStoreAt(t, c.Now)}
}

// release is maintainer sk's release signature of d's PCR0/1/2.
func (f *fixture) release(sk string, d *attest.Dev) nostr.Event {
	e, err := nip.ReleaseSignature(repo, "1.0.0", "dev", d.PCRs(), nostr.Timestamp(f.clock.Now().Unix()))
	if err != nil {
		f.t.Fatal(err)
	}
	if err := e.Sign(sk); err != nil {
		f.t.Fatal(err)
	}
	return e
}

// The secret goes back to a restart of the same build on the same EC2
// instance and to an upgrade the maintainers signed; it is refused to an
// unsigned or under-signed build, to another EC2 instance, to a debug
// enclave, to stale or borrowed attestations and to another root.
func TestKeyRelease(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	const ec2 = "i-0123456789abcdef0"
	m1, m2 := nostr.GeneratePrivateKey(), nostr.GeneratePrivateKey()
	p1, _ := nostr.GetPublicKey(m1)
	p2, _ := nostr.GetPublicKey(m2)
	policy := &keystore.Policy{Ref: repo, ReleasePubkeys: []string{p1, p2}}

	a := f.Attestor("build-a", ec2)
	first := f.Client(a)
	if has, err := first.Has(ctx, nil); err != nil || has {
		t.Fatalf("has before set = %v, %v", has, err)
	}
	if _, err := first.Get(ctx, nil); !keystore.IsNotFound(err) {
		t.Fatalf("get before set: %v", err)
	}
	// A policy the setter itself does not satisfy is refused.
	if err := first.Set(ctx, "s3cret", policy, &keystore.Input{Ref: repo}); err == nil || !strings.Contains(err.Error(), "0 of the policy's 2 maintainers") {
		t.Fatalf("set with an unsatisfied policy: %v", err)
	}
	in := &keystore.Input{Ref: repo, ReleaseSignatures: []nostr.Event{f.release(m1, a), f.release(m2, a)}}
	if err := first.Set(ctx, "s3cret", policy, in); err != nil {
		t.Fatal(err)
	}

	// Restart: same PCRs, a new request key.
	if got, err := f.Client(a).Get(ctx, nil); err != nil || got != "s3cret" {
		t.Fatalf("restart: %q, %v", got, err)
	}
	if has, err := f.Client(a).Has(ctx, nil); err != nil || !has {
		t.Fatalf("restart has = %v, %v", has, err)
	}

	// Upgrade: build B, signed by both maintainers.
	b := f.Attestor("build-b", ec2)
	if bytes.Equal(b.PCRs()[0], a.PCRs()[0]) || !bytes.Equal(b.PCRs()[4], a.PCRs()[4]) {
		t.Fatal("builds A and B should differ in PCR0 and share PCR4")
	}
	signedB := &keystore.Input{Ref: repo, ReleaseSignatures: []nostr.Event{f.release(m1, b), f.release(m2, b)}}
	if got, err := f.Client(b).Get(ctx, signedB); err != nil || got != "s3cret" {
		t.Fatalf("signed upgrade: %q, %v", got, err)
	}

	refused := []struct {
		name string
		a    attest.Attester
		in   *keystore.Input
		want string
	}{
		{"unsigned build", f.Attestor("build-c", ec2), nil, "needs an input"},
		{"under-signed build", f.Attestor("build-c", ec2),
			&keystore.Input{Ref: repo, ReleaseSignatures: []nostr.Event{f.release(m1, f.Attestor("build-c", ec2))}}, "1 of the policy's 2 maintainers"},
		{"another build's signatures", f.Attestor("build-c", ec2), signedB, "0 of the policy's 2 maintainers"},
		{"another ref", b, &keystore.Input{Ref: "https://example.com/fork", ReleaseSignatures: signedB.ReleaseSignatures}, "is not the policy's ref"},
		{"another EC2 instance", f.Attestor("build-a", "i-0fedcba9876543210"), nil, keystore.ErrNotFound},
		{"debug enclave", debug(f.Attestor("build-a", ec2)), nil, "debug enclave"},
	}
	for _, c := range refused {
		got, err := f.Client(c.a).Get(ctx, c.in)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %q, %v; want an error with %q", c.name, got, err, c.want)
		}
	}

	// An attestation of another key (one copied from elsewhere).
	borrowed := f.Client(a)
	borrowed.Attest = func(ctx context.Context, _ []byte) ([]byte, error) {
		return a.Attest(ctx, bytes.Repeat([]byte{1}, 32), nil, nil)
	}
	if _, err := borrowed.Get(ctx, nil); err == nil || !strings.Contains(err.Error(), "not the request's pubkey") {
		t.Errorf("borrowed attestation: %v", err)
	}
	// A stale one.
	stale := f.Client(a)
	stale.Attest = func(ctx context.Context, pub []byte) ([]byte, error) {
		doc, err := a.Attest(ctx, pub, nil, nil)
		f.clock.Add(20 * time.Minute)
		return doc, err
	}
	if _, err := stale.Get(ctx, nil); err == nil || !strings.Contains(err.Error(), "not fresh") {
		t.Errorf("stale attestation: %v", err)
	}
	// One chained to another root.
	other, err := attest.LoadOrCreateDev(t.TempDir(), make([]byte, 48), f.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	other.Simulate(ec2, nil)
	if _, err := f.Client(other).Get(ctx, nil); err == nil || !strings.Contains(err.Error(), "attestation chain") {
		t.Errorf("other root: %v", err)
	}

	// Secrets live TTL after their last set.
	f.clock.Add(71 * time.Hour)
	if err := f.Client(a).Set(ctx, "s3cret", policy, in); err != nil {
		t.Fatal(err)
	}
	f.clock.Add(2 * time.Hour)
	if got, err := f.Client(a).Get(ctx, nil); err != nil || got != "s3cret" {
		t.Fatalf("after a refresh: %q, %v", got, err)
	}
	f.clock.Add(73 * time.Hour)
	if _, err := f.Client(a).Get(ctx, nil); !keystore.IsNotFound(err) {
		t.Fatalf("after the TTL: %v", err)
	}
}

func debug(d *attest.Dev) *attest.Dev { d.SimulateDebug(); return d }

// Checkpoints only move forward: an older one, or another with the same
// seq, is refused; the newest is what anyone reads back.
func TestCheckpoints(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	c := f.Client(f.Attestor("build-a", "i-1"))
	sk := nostr.GeneratePrivateKey()
	pk, _ := nostr.GetPublicKey(sk)
	cp := func(seq uint64, hash byte) nostr.Event {
		e := nip.CheckpointEvent(nip.Checkpoint{Seq: seq, SHA256: hex.EncodeToString(bytes.Repeat([]byte{hash}, 32)), Size: 100, Blob: "state.1"},
			"dev", nostr.Timestamp(f.clock.Now().Unix())+nostr.Timestamp(seq))
		if err := e.Sign(sk); err != nil {
			t.Fatal(err)
		}
		return e
	}
	if got, err := c.NewestCheckpoint(ctx, pk); err != nil || got != nil {
		t.Fatalf("none yet: %v, %v", got, err)
	}
	// Recording needs what getting the keys needs: an attested enclave
	// that may have a secret here.
	if err := c.RecordCheckpoint(ctx, cp(1, 1)); err == nil || !strings.Contains(err.Error(), "may have no secret here") {
		t.Fatalf("a checkpoint from an enclave with no secret here: %v", err)
	}
	if err := f.Client(debug(f.Attestor("build-a", "i-1"))).RecordCheckpoint(ctx, cp(1, 1)); err == nil || !strings.Contains(err.Error(), "debug enclave") {
		t.Fatalf("a checkpoint from a debug enclave: %v", err)
	}
	unattested := f.Client(f.Attestor("build-a", "i-1"))
	if _, err := unattested.Call(ctx, "checkpoint", keystore.Params{Event: ptr(cp(1, 1))}); err == nil || !strings.Contains(err.Error(), "no attestation") {
		t.Fatalf("a checkpoint without an attestation: %v", err)
	}
	if err := c.Set(ctx, "the instance's keys", nil, nil); err != nil {
		t.Fatal(err)
	}
	for _, seq := range []uint64{1, 2, 2} {
		if err := c.RecordCheckpoint(ctx, cp(seq, 1)); err != nil {
			t.Fatalf("seq %d: %v", seq, err)
		}
	}
	for _, bad := range []struct {
		e    nostr.Event
		want string
	}{
		{cp(1, 1), "older than the recorded 2"},
		{cp(2, 9), "another checkpoint 2"},
		{func() nostr.Event { e := cp(3, 1); e.Tags = append(e.Tags, nostr.Tag{"x2"}); return e }(), "bad signature"},
	} {
		if err := c.RecordCheckpoint(ctx, bad.e); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("recording %v: %v, want %q", bad.e.Tags, err, bad.want)
		}
	}
	got, err := c.NewestCheckpoint(ctx, pk)
	if err != nil || got == nil {
		t.Fatal(got, err)
	}
	if p, err := nip.ParseCheckpoint(got); err != nil || p.Seq != 2 || p.Instance != pk {
		t.Fatalf("newest: %+v, %v", p, err)
	}
}

// Requests the server cannot use get a short answer, never a crash.
func TestBadRequests(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	c := f.Client(f.Attestor("build-a", "i-1"))
	for _, tc := range []struct {
		method string
		p      keystore.Params
		want   string
	}{
		{"sing", keystore.Params{}, `unknown method "sing"`},
		{"get", keystore.Params{}, "no attestation"},
		{"get", keystore.Params{Attestation: "%%%"}, "not base64"},
		{"get", keystore.Params{Attestation: "AAAA"}, "attestation"},
		{"checkpoint", keystore.Params{Event: &nostr.Event{Kind: 1}}, "no attestation"},
	} {
		if _, err := c.Call(ctx, tc.method, tc.p); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %+v: %v, want %q", tc.method, tc.p, err, tc.want)
		}
	}
	// An attested checkpoint that is not one.
	if err := c.Set(ctx, "keys", nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.RecordCheckpoint(ctx, nostr.Event{Kind: 1}); err == nil || !strings.Contains(err.Error(), "kind 1") {
		t.Errorf("a kind-1 checkpoint: %v", err)
	}
	// A set without data or with too much.
	for _, data := range []string{"", strings.Repeat("x", keystore.MaxData+1)} {
		if err := c.Set(ctx, data, nil, nil); err == nil || !strings.Contains(err.Error(), "data: want 1 to 1024 bytes") {
			t.Errorf("set %d bytes: %v", len(data), err)
		}
	}
}

func TestMain(m *testing.M) { testenv.Main(m) }

func ptr[T any](v T) *T { return &v }
