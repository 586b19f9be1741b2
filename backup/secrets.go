package backup

import (
	"encoding/json"
	"errors"
	"fmt"

	"filippo.io/age"
	"github.com/nbd-wtf/go-nostr"
)

// Secrets are what the key store keeps for an instance: its Nostr key
// and its backup key. They never leave the enclave except encrypted to an
// attested key store; String keeps them out of logs.
type Secrets struct {
	InstanceKey string `json:"instance_key"` // hex secret key
	BackupKey   string `json:"backup_key"`   // age X25519 identity (AGE-SECRET-KEY-1…)
}

// NewSecrets pairs an instance key with a fresh backup key.
func NewSecrets(instanceKey string) (Secrets, error) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return Secrets{}, err
	}
	s := Secrets{InstanceKey: instanceKey, BackupKey: id.String()}
	return s, s.check()
}

// ParseSecrets reads secrets as the key store returned them.
func ParseSecrets(data string) (Secrets, error) {
	var s Secrets
	if err := json.Unmarshal([]byte(data), &s); err != nil {
		return Secrets{}, errors.New("secrets from the key store are not JSON")
	}
	return s, s.check()
}

func (s Secrets) check() error {
	if _, err := nostr.GetPublicKey(s.InstanceKey); err != nil || len(s.InstanceKey) != 64 {
		return errors.New("secrets: instance_key is not a hex secret key")
	}
	if _, err := age.ParseX25519Identity(s.BackupKey); err != nil {
		return errors.New("secrets: backup_key is not an age X25519 identity")
	}
	return nil
}

// Marshal is the form given to the key store.
func (s Secrets) Marshal() string {
	b, _ := json.Marshal(s)
	return string(b)
}

// Pubkey is the instance's hex public key.
func (s Secrets) Pubkey() string {
	pk, _ := nostr.GetPublicKey(s.InstanceKey)
	return pk
}

func (s Secrets) identity() (*age.X25519Identity, error) {
	id, err := age.ParseX25519Identity(s.BackupKey)
	if err != nil {
		return nil, fmt.Errorf("backup key: %w", err)
	}
	return id, nil
}

// String and GoString print no secret.
func (s Secrets) String() string   { return "backup.Secrets{instance " + s.Pubkey() + "}" }
func (s Secrets) GoString() string { return s.String() }
