// Package enclave is the trusted runtime of an instance: it holds the
// instance key, attests it, and wires bot, billing, deployer, zaps, the
// publishers and the public HTTP server into one Instance, whose Hooks say
// in one place what follows a credit, a change and a notice. Main is the
// whole process around it: it opens the parts (key or key custody,
// database, Lightning, Docker, backups, egress confiner, TLS), runs the
// Instance, and closes what it opened when Run returns (there is no
// separate Close: nothing outlives Run). Dev mode and the enclave differ
// only in Main's fields: the dev command fills them from this host;
// RunApart (enclaved enclave) from the link to the parent, through which
// every connection in and out goes.
//
// Everything here runs inside the enclave. It must not import parent, nor
// the dev and test tooling (internal/testenv, regtest, proc, devregistry,
// devrelay): the dev command passes in only their URLs and endpoints.
package enclave

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/nbd-wtf/go-nostr"
	"github.com/nbd-wtf/go-nostr/nip19"

	"github.com/enclaved/enclaved/nip"
)

// Key is the instance's Nostr key pair. Its secret half never leaves the
// value: String and LogValue print the npub only.
type Key struct {
	sec string // hex
	pub string // hex
}

// ParseKey builds a Key from a 64-character hex secret key.
func ParseKey(secHex string) (Key, error) {
	secHex = strings.TrimSpace(secHex)
	b, err := hex.DecodeString(secHex)
	if err != nil || len(b) != 32 {
		return Key{}, errors.New("instance key: want 64 hex characters")
	}
	pub, err := nostr.GetPublicKey(secHex)
	if err != nil {
		return Key{}, fmt.Errorf("instance key: %w", err)
	}
	return Key{sec: secHex, pub: pub}, nil
}

// NewKey returns a fresh random key.
func NewKey() (Key, error) {
	for {
		var b [32]byte
		if _, err := rand.Read(b[:]); err != nil {
			return Key{}, err
		}
		if k, err := ParseKey(hex.EncodeToString(b[:])); err == nil {
			return k, nil
		}
	}
}

// LoadOrCreateKey reads the secret key file at path, or creates it (mode
// 0600) with a fresh key. It refuses a file that others can read. This is the
// dev-mode key store; inside Nitro the key comes from key custody.
func LoadOrCreateKey(path string) (Key, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		k, err := NewKey()
		if err != nil {
			return Key{}, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return Key{}, err
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return Key{}, fmt.Errorf("create instance key: %w", err)
		}
		_, err = f.WriteString(k.sec + "\n")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path)
			return Key{}, fmt.Errorf("write instance key: %w", err)
		}
		return k, nil
	}
	if err != nil {
		return Key{}, fmt.Errorf("instance key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return Key{}, fmt.Errorf("instance key %s is readable by others (mode %v): run chmod 600 on it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return Key{}, fmt.Errorf("instance key: %w", err)
	}
	k, err := ParseKey(string(b))
	if err != nil {
		return Key{}, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// PublicKey returns the hex public key.
func (k Key) PublicKey() string { return k.pub }

// Npub returns the bech32 public key.
func (k Key) Npub() string {
	s, _ := nip19.EncodePublicKey(k.pub)
	return s
}

// Keys returns the key as DM code needs it (signing, NIP-44, NIP-04).
func (k Key) Keys() *nip.LocalKeys {
	ks, err := nip.NewLocalKeys(k.sec)
	if err != nil {
		panic("enclave: a parsed key was refused: " + err.Error()) // ParseKey checked it
	}
	return ks
}

// Sign sets the event's pubkey, id and signature.
func (k Key) Sign(evt *nostr.Event) error { return evt.Sign(k.sec) }

// String returns the npub, never the secret.
func (k Key) String() string { return k.Npub() }

// LogValue logs the npub, never the secret.
func (k Key) LogValue() slog.Value { return slog.StringValue(k.Npub()) }

// GoString keeps %#v from printing the secret.
func (k Key) GoString() string { return "enclave.Key{" + k.Npub() + "}" }

// Labels of the keys derived from the instance key; each starts the HMAC
// input, so no two uses of the instance key can collide.
const (
	containerKeyLabel = "enclaved/container-key/v1\x00"
	zapperKeyLabel    = "enclaved/zapper-key/v1\x00"
)

// ContainerKey derives the key pair of the container with the given record
// id: the secret is HMAC-SHA256(instance secret, label ‖ id ‖ counter) for
// the first one-byte counter (0, 1, ...) that gives a valid secp256k1 secret
// key. A restored instance key recovers every container key from the ids
// alone; nothing per container is stored.
func (k Key) ContainerKey(id string) Key { return k.derive(containerKeyLabel, id) }

// ZapperKey derives the key that signs the instance's zap receipts (the
// nostrPubkey of its LNURL endpoints), the same way with its own label.
func (k Key) ZapperKey() Key { return k.derive(zapperKeyLabel, "") }

func (k Key) derive(label, id string) Key {
	sec, _ := hex.DecodeString(k.sec)
	for ctr := byte(0); ; ctr++ {
		m := hmac.New(sha256.New, sec)
		m.Write([]byte(label))
		m.Write([]byte(id))
		m.Write([]byte{ctr})
		if dk, err := ParseKey(hex.EncodeToString(m.Sum(nil))); err == nil {
			return dk
		}
	}
}
