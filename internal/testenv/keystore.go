package testenv

import (
	"context"
	"crypto/sha512"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/attest"
	"github.com/enclaved/enclaved/keystore"
	"github.com/enclaved/enclaved/nip"
	"github.com/enclaved/enclaved/verify"
)

// KeyStore is a key store serving on its own in-process relay, trusting a
// dev root that its attestors share.
type KeyStore struct {
	Relay  string
	Pubkey string
	Root   string // the dev root's directory
	pool   *nostr.SimplePool
	now    func() time.Time
	tb     testing.TB
}

// NewKeyStore starts a key store for one test.
func NewKeyStore(tb testing.TB) *KeyStore { return NewKeyStoreAt(tb, time.Now) }

// NewKeyStoreAt starts a key store whose server, attestors and clients
// all read the clock now.
func NewKeyStoreAt(tb testing.TB, now func() time.Time) *KeyStore {
	tb.Helper()
	ks := &KeyStore{Relay: Relay(tb).URL, Root: tb.TempDir(), now: now, tb: tb}
	ctx, cancel := context.WithCancel(context.Background())
	ks.pool = nostr.NewSimplePool(ctx)
	tb.Cleanup(func() { cancel(); ks.pool.Close("test over") })
	d := ks.Attestor("build", "i-0123456789abcdef0")
	keys, _ := nip.NewLocalKeys(nostr.GeneratePrivateKey())
	s := &keystore.Server{Keys: keys, Now: now, Verify: keystore.DocumentVerifier(verify.Options{DevRoot: d.RootPEM(), AllowDev: true})}
	ks.Pubkey, _ = s.Pubkey(ctx)
	go s.Serve(ctx, ks.pool, []string{ks.Relay})
	c := ks.Client(d)
	c.Timeout, c.Attempts = 2*time.Second, 10
	if _, err := c.Has(ctx, nil); err != nil {
		tb.Fatalf("key store not answering: %v", err)
	}
	return ks
}

// Attestor is a dev attestor of a build (its PCR0/1/2 derive from the
// name) on an EC2 instance (PCR4), under the key store's dev root.
func (ks *KeyStore) Attestor(build, instanceID string) *attest.Dev {
	h := sha512.Sum384([]byte(build))
	d, err := attest.LoadOrCreateDev(ks.Root, h[:], ks.now)
	if err != nil {
		ks.tb.Fatal(err)
	}
	d.Simulate(instanceID, nil)
	return d
}

// Client is a client with a fresh request key, attested by a.
func (ks *KeyStore) Client(a attest.Attester) *keystore.Client {
	keys, _ := nip.NewLocalKeys(nostr.GeneratePrivateKey())
	return &keystore.Client{Server: ks.Pubkey, Relays: []string{ks.Relay}, Pool: ks.pool, Keys: keys, Now: ks.now,
		Attest: func(ctx context.Context, pub []byte) ([]byte, error) { return a.Attest(ctx, pub, nil, nil) }}
}
