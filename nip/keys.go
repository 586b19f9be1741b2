package nip

import (
	"context"
	"fmt"

	"github.com/nbd-wtf/go-nostr/keyer"
	"github.com/nbd-wtf/go-nostr/nip04"
)

// LocalKeys implements Keys with a secret key held in memory: go-nostr's
// plain key signer (NIP-44 with cached conversation keys) plus NIP-04.
type LocalKeys struct {
	keyer.KeySigner
	sec string
}

var _ Keys = (*LocalKeys)(nil)

// NewLocalKeys wraps a 64-character hex secret key.
func NewLocalKeys(secHex string) (*LocalKeys, error) {
	ks, err := keyer.NewPlainKeySigner(secHex)
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	return &LocalKeys{KeySigner: ks, sec: secHex}, nil
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
