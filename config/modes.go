package config

import "errors"

// The modes' configurations. Config is the one format every mode loads,
// from the same file, environment and -set flags, with the same keys; each
// mode reads its view of it, which For<Mode> returns and whose Validate
// adds the mode's own requirements to Config.Validate's checks of every
// key. The views share Common, and the two modes that run an instance
// share InstanceConfig, which is what enclave.Main reads.
//
// Decision: views over one Config rather than one loader per mode, so that
// one file can serve several modes (docker-compose's does), the keys, env
// names and precedence stay one set, and a key one mode ignores is still
// checked, as before.

// Common is what every mode reads.
type Common struct {
	// DataDir holds the database, keys and caches.
	DataDir string `toml:"data_dir"`
	Log     Log    `toml:"log"`
	Nostr   Nostr  `toml:"nostr"`
}

// InstanceConfig is what a running instance reads, in dev mode and in the
// enclave.
type InstanceConfig struct {
	Common
	Instance  Instance  `toml:"instance"`
	Unit      Unit      `toml:"unit"`
	Pricing   Pricing   `toml:"pricing"`
	Lightning Lightning `toml:"lightning"`
	HTTP      HTTP      `toml:"http"`
	Attest    Attest    `toml:"attest"`
	// Enclave is read in dev mode too (enclave.confine_containers).
	Enclave  Enclave  `toml:"enclave"`
	Backup   Backup   `toml:"backup"`
	KeyStore KeyStore `toml:"keystore"`
	Metrics  Metrics  `toml:"metrics"`
}

// DevConfig is what `enclaved dev` reads.
type DevConfig struct {
	InstanceConfig
	Dev Dev `toml:"dev"`
}

// EnclaveConfig is what `enclaved enclave` reads: an instance's sections,
// enclave.* saying how it reaches its parent.
type EnclaveConfig struct {
	InstanceConfig
}

// ParentConfig is what `enclaved parent` reads. Of the instance section it
// uses only the signature files it passes on to the enclave.
type ParentConfig struct {
	Common
	Instance Instance `toml:"instance"`
	Parent   Parent   `toml:"parent"`
	// Metrics.Listen is where the parent serves the enclave's metrics,
	// forwarded to the enclave's ingress port of the same number.
	Metrics Metrics `toml:"metrics"`
}

// KeyStoreConfig is what `enclaved keystore` reads.
type KeyStoreConfig struct {
	Common
	KeyStore KeyStore `toml:"keystore"`
}

// ForDev is the dev mode's view.
func (c Config) ForDev() DevConfig { return DevConfig{InstanceConfig: c.InstanceConfig, Dev: c.Dev} }

// ForEnclave is the enclave's view.
func (c Config) ForEnclave() EnclaveConfig { return EnclaveConfig{InstanceConfig: c.InstanceConfig} }

// ForParent is the parent's view.
func (c Config) ForParent() ParentConfig {
	return ParentConfig{Common: c.Common, Instance: c.Instance, Parent: c.Parent, Metrics: c.Metrics}
}

// ForKeyStore is the key store's view.
func (c Config) ForKeyStore() KeyStoreConfig {
	return KeyStoreConfig{Common: c.Common, KeyStore: c.KeyStore}
}

// Validate checks what dev mode needs besides valid keys: a relay.
func (c DevConfig) Validate() error {
	if len(c.Nostr.Relays) == 0 && c.Dev.RelayListen == "" {
		return errors.New("no relay: give --relay, or set nostr.relays or dev.relay_listen")
	}
	return nil
}

// Validate checks what the enclave needs besides valid keys: its relays
// and Lightning node.
func (c EnclaveConfig) Validate() error {
	if len(c.Nostr.Relays) == 0 || c.Lightning.GRPC == "" {
		return errors.New("enclave: nostr.relays and lightning.grpc are required")
	}
	return nil
}

// Validate checks what the key store needs besides valid keys: its relays.
func (c KeyStoreConfig) Validate() error {
	if len(c.Nostr.Relays) == 0 {
		return errors.New("keystore: nostr.relays (or -relay) is required")
	}
	return nil
}
