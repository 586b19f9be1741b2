package nip

import (
	"container/list"
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/schnorr"
	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"github.com/nbd-wtf/go-nostr"
	"github.com/nbd-wtf/go-nostr/nip04"
	"github.com/nbd-wtf/go-nostr/nip44"
)

// LocalKeys implements Keys with a secret key held in memory: NIP-44 with
// the conversation keys of recent peers cached (a bounded cache) plus
// NIP-04. The key is parsed once: signing and key agreement do not derive
// the public key again each time.
type LocalKeys struct {
	sec  string
	priv *btcec.PrivateKey
	pub  string
	cks  *ckCache
}

var _ Keys = (*LocalKeys)(nil)

// maxConversationKeys bounds the cached NIP-44 conversation keys (one per
// peer: 32 bytes and its pubkey).
const maxConversationKeys = 4096

// NewLocalKeys wraps a 64-character hex secret key.
func NewLocalKeys(secHex string) (*LocalKeys, error) {
	b, err := hex.DecodeString(secHex)
	if err != nil || len(b) != 32 {
		return nil, fmt.Errorf("keys: invalid secret key")
	}
	var s secp256k1.ModNScalar
	if overflow := s.SetByteSlice(b); overflow || s.IsZero() {
		return nil, fmt.Errorf("keys: invalid secret key")
	}
	priv, pub := btcec.PrivKeyFromBytes(b)
	return &LocalKeys{sec: secHex, priv: priv, pub: hexKey(schnorr.SerializePubKey(pub)),
		cks: newCKCache(maxConversationKeys)}, nil
}

// GetPublicKey returns the hex public key.
func (k *LocalKeys) GetPublicKey(context.Context) (string, error) { return k.pub, nil }

// SignEvent sets evt's PubKey, ID and Sig (BIP-340, as go-nostr signs).
func (k *LocalKeys) SignEvent(_ context.Context, evt *nostr.Event) error {
	return signWith(k.priv, k.pub, evt)
}

// signWith signs evt with priv, whose x-only hex public key is pub.
func signWith(priv *btcec.PrivateKey, pub string, evt *nostr.Event) error {
	if evt.Tags == nil {
		evt.Tags = nostr.Tags{}
	}
	evt.PubKey = pub
	h := sha256.Sum256(evt.Serialize())
	sig, err := schnorr.Sign(priv, h[:], schnorr.FastSign())
	if err != nil {
		return err
	}
	evt.ID = hex.EncodeToString(h[:])
	evt.Sig = hex.EncodeToString(sig.Serialize())
	return nil
}

// Encrypt encrypts plaintext to recipient (hex pubkey) per NIP-44.
func (k *LocalKeys) Encrypt(_ context.Context, plaintext, recipient string) (string, error) {
	ck, err := k.conversationKey(recipient, true)
	if err != nil {
		return "", err
	}
	return nip44.Encrypt(plaintext, ck)
}

// Decrypt decrypts a NIP-44 payload from sender (hex pubkey).
func (k *LocalKeys) Decrypt(_ context.Context, ciphertext, sender string) (string, error) {
	ck, err := k.conversationKey(sender, true)
	if err != nil {
		return "", err
	}
	return nip44.Decrypt(ciphertext, ck)
}

// decryptOnce is Decrypt from a key seen once (a gift wrap's random key):
// its conversation key is not cached.
func (k *LocalKeys) decryptOnce(ciphertext, sender string) (string, error) {
	ck, err := k.conversationKey(sender, false)
	if err != nil {
		return "", err
	}
	return nip44.Decrypt(ciphertext, ck)
}

// conversationKey is the NIP-44 conversation key with peer, from the
// cache if keep and there.
func (k *LocalKeys) conversationKey(peer string, keep bool) ([32]byte, error) {
	if keep {
		if ck, ok := k.cks.get(peer); ok {
			return ck, nil
		}
	}
	ck, err := conversationKey(k.priv, peer)
	if err == nil && keep {
		k.cks.put(peer, ck)
	}
	return ck, err
}

// conversationKey is NIP-44's conversation key of priv and the x-only hex
// public key peer: HKDF-extract (SHA-256, salt "nip44-v2") of the x
// coordinate of their shared point.
func conversationKey(priv *btcec.PrivateKey, peer string) ([32]byte, error) {
	var ck [32]byte
	b, err := hex.DecodeString(peer)
	if err != nil || len(b) != 32 {
		return ck, fmt.Errorf("invalid public key %q", clipHex(peer))
	}
	pub, err := schnorr.ParsePubKey(b)
	if err != nil {
		return ck, fmt.Errorf("invalid public key %q: %w", clipHex(peer), err)
	}
	var point, result secp256k1.JacobianPoint
	pub.AsJacobian(&point)
	secp256k1.ScalarMultNonConst(&priv.Key, &point, &result)
	result.ToAffine()
	var shared [32]byte
	result.X.PutBytesUnchecked(shared[:])
	prk, err := hkdf.Extract(sha256.New, shared[:], []byte("nip44-v2"))
	if err != nil {
		return ck, err
	}
	copy(ck[:], prk)
	return ck, nil
}

func hexKey(b []byte) string { return hex.EncodeToString(b) }

func clipHex(s string) string {
	if len(s) > 16 {
		return s[:16] + "…"
	}
	return s
}

// NIP04Encrypt encrypts plaintext to recipient (hex pubkey) per NIP-04.
func (k *LocalKeys) NIP04Encrypt(_ context.Context, plaintext, recipient string) (string, error) {
	shared, err := nip04.ComputeSharedSecret(recipient, k.sec)
	if err != nil {
		return "", err
	}
	return nip04.Encrypt(plaintext, shared)
}

// NIP04Decrypt decrypts a NIP-04 "ciphertext?iv=..." from sender.
func (k *LocalKeys) NIP04Decrypt(_ context.Context, ciphertext, sender string) (string, error) {
	shared, err := nip04.ComputeSharedSecret(sender, k.sec)
	if err != nil {
		return "", err
	}
	return nip04.Decrypt(ciphertext, shared)
}

// String and GoString keep the secret out of formatted output.
func (k *LocalKeys) String() string   { return "nip.LocalKeys" }
func (k *LocalKeys) GoString() string { return "nip.LocalKeys" }

// ckCache is a least-recently-used cache of conversation keys by peer.
type ckCache struct {
	max int

	// The mutex protects the following elements.
	mu    sync.Mutex
	order *list.List               // of *ckEntry, most recent first
	byKey map[string]*list.Element // peer → its element
}

type ckEntry struct {
	peer string
	ck   [32]byte
}

func newCKCache(max int) *ckCache {
	return &ckCache{max: max, order: list.New(), byKey: map[string]*list.Element{}}
}

func (c *ckCache) get(peer string) ([32]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byKey[peer]
	if !ok {
		return [32]byte{}, false
	}
	c.order.MoveToFront(e)
	return e.Value.(*ckEntry).ck, true
}

func (c *ckCache) put(peer string, ck [32]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byKey[peer]; ok {
		e.Value.(*ckEntry).ck = ck
		c.order.MoveToFront(e)
		return
	}
	c.byKey[peer] = c.order.PushFront(&ckEntry{peer: peer, ck: ck})
	for c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.byKey, last.Value.(*ckEntry).peer)
	}
}
