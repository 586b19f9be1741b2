// Package config defines enclaved's configuration: one TOML file format,
// ENCLAVED_* environment overrides and -set key=value flags, applied in that
// order over the defaults, then validated with errors that name the key.
// Each mode (dev, enclave, parent, key store) reads its own struct, a view
// of the whole sharing the common sections (modes.go).
//
// It is used on both sides of the trust boundary. Inside the enclave only the
// configuration baked into the measured image may be trusted; anything the
// parent supplies is input to validate, never a source of secrets.
package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// EnvPrefix starts every environment override: log.level is ENCLAVED_LOG_LEVEL.
const EnvPrefix = "ENCLAVED_"

// Config is the whole configuration, as one file holds it: every key of
// every mode. Each mode reads its view of it (modes.go): the sections an
// instance runs on (InstanceConfig, which embeds Common), and the dev
// mode's and the parent's own. Keys are the toml tags, dotted by table;
// embedded structs add no table.
type Config struct {
	InstanceConfig
	Dev    Dev    `toml:"dev"`
	Parent Parent `toml:"parent"`
}

// Backup keeps the instance's state across restarts: encrypted backups in
// the parent's blob store, keys in a key store (see docs/backup.md).
type Backup struct {
	// Mode is "" (off: the data dir is the state, dev mode) or
	// "keystore": the instance key and backup key come from the key
	// store, state is restored from the parent at boot and backed up to
	// it (needs the parent's link: enclaved enclave).
	Mode string `toml:"mode"`
	// Delay bounds how long after a money event a backup starts;
	// Interval is how often one is taken anyway. VolumeInterval is how
	// often a running container's volumes are copied (each copy freezes
	// it briefly; 0: at every backup).
	Delay          time.Duration `toml:"delay"`
	Interval       time.Duration `toml:"interval"`
	VolumeInterval time.Duration `toml:"volume_interval"`
	// BlobTimeout and BlobRateKiB are each blob transfer's deadline: one
	// that moved n bytes fails once it ran longer than BlobTimeout plus
	// n / BlobRateKiB KiB/s (tunnel.Pace): a stall ends, and a container
	// frozen for its volumes' copy is thawed, within that.
	BlobTimeout time.Duration `toml:"blob_timeout"`
	BlobRateKiB int64         `toml:"blob_rate_kib"`
	// Ref and Maintainers are the key store policy: builds whose
	// PCR0/1/2 Threshold (0: all) of the maintainers (hex pubkeys)
	// signed, in release events with r = Ref, may have the keys.
	Ref         string   `toml:"ref"`
	Maintainers []string `toml:"maintainers"`
	Threshold   int64    `toml:"threshold"`
	// AcceptLoss is the operator's acknowledgement that the state is
	// lost: start although the newest backup cannot be restored, or
	// although the key store has no keys while the parent holds backups.
	AcceptLoss bool `toml:"accept_loss"`
}

// KeyStore names the key store the instance uses, and configures
// `enclaved keystore`.
type KeyStore struct {
	Pubkey string   `toml:"pubkey"` // hex or npub of the key store
	Relays []string `toml:"relays"` // where it listens (default nostr.relays)
	// Refresh is how often the instance sets its keys and checkpoint
	// again, so the key store's TTL never drops them while it runs.
	Refresh time.Duration `toml:"refresh"`
	// TTL (enclaved keystore) is how long a secret is kept after it was
	// last set.
	TTL time.Duration `toml:"ttl"`
	// DevRoot (enclaved keystore) is a dev attestation root (PEM file)
	// whose documents it accepts besides AWS Nitro's: for development.
	DevRoot string `toml:"dev_root"`
}

// Enclave configures the trusted side when it runs apart from its parent
// (`enclaved enclave`): it reaches the network only through the parent.
type Enclave struct {
	// Parent is how to reach the parent: vsock:CID:PORT, unix:PATH or
	// HOST:PORT.
	Parent string `toml:"parent"`
	// Egress lists the other destinations the instance may dial (image
	// registries: "host:port", "host:*", "*.domain:port"); the relays and
	// lightning.grpc are always allowed. Everything else is refused.
	Egress []string `toml:"egress"`
	// IngressPort is the public port whose forwarded connections the
	// HTTP API serves.
	IngressPort int64 `toml:"ingress_port"`
	// ConfineContainers runs each container's outbound TCP through the
	// enclave's transparent proxy (iptables REDIRECT on its bridge; needs
	// iptables and root), allowing only what its renter asked for within
	// instance.container_egress. On in the enclave image; off by default
	// so a dev instance leaves a shared host's firewall alone.
	ConfineContainers bool `toml:"confine_containers"`
	// ConnectProxy is where the enclave serves an HTTP CONNECT proxy for
	// the programs in it that dial on their own (dockerd pulling images,
	// told HTTPS_PROXY): its tunnels go through the egress allowlist.
	// Empty: none. The enclave image uses 127.0.0.1:3128.
	ConnectProxy string `toml:"connect_proxy"`
}

// Parent configures the host side (`enclaved parent`). It holds no secret.
type Parent struct {
	// Listen is where the enclave connects: vsock:PORT, unix:PATH or
	// HOST:PORT.
	Listen string `toml:"listen"`
	// BlobDir holds the enclave's (encrypted) blobs; default data_dir/blobs.
	BlobDir string `toml:"blob_dir"`
	// Forward lists public listeners, "ADDR=PORT": connections to ADDR go
	// into the enclave as ingress on PORT.
	Forward    []string `toml:"forward"`
	InstanceID string   `toml:"instance_id"` // the EC2 instance id, told to the enclave
	PublicIP   string   `toml:"public_ip"`
	// What `enclaved parent launch` passes to nitro-cli run-enclave: the
	// enclave image file, its vCPUs and memory, its vsock CID, and debug
	// mode (console output, but PCRs read as zeros: verifiers refuse it).
	EIF             string `toml:"eif"`
	EnclaveCPUs     int64  `toml:"enclave_cpus"`
	EnclaveMemoryMB int64  `toml:"enclave_memory_mib"`
	EnclaveCID      int64  `toml:"enclave_cid"`
	EnclaveDebug    bool   `toml:"enclave_debug"`
}

// Attest chooses who attests the instance key.
type Attest struct {
	// Mode is nitro (the Nitro Security Module, /dev/nsm: inside an
	// enclave only) or dev (a local dev root; events say t=dev).
	Mode string `toml:"mode"`
	// DevInstanceID and DevSigningCert make the dev attestor report the
	// PCR4 of that EC2 instance id and the PCR8 of an image signed with
	// that certificate (PEM file), to try instance and build signatures.
	DevInstanceID  string `toml:"dev_instance_id"`
	DevSigningCert string `toml:"dev_signing_cert"`
	// DevRootDir holds the dev root (dev-root.pem, dev-root.key);
	// default data_dir. It stands for the Nitro hardware, so it may live
	// outside a data dir that is wiped at every restart.
	DevRootDir string `toml:"dev_root_dir"`
}

// Instance describes the instance as a whole.
type Instance struct {
	Name          string `toml:"name"`           // kind-0 profile name
	About         string `toml:"about"`          // kind-0 profile text
	CapacityUnits int64  `toml:"capacity_units"` // units the instance rents out
	// Releases are files holding maintainers' release signatures (kind
	// 63794 JSON) that the announcement embeds.
	Releases []string `toml:"releases"`
	// BuildSignature and InstanceSignature are files holding the builder's
	// signature of PCR8 (kind 23794 JSON) and the launcher's of PCR4 (kind
	// 23795), embedded in the announcement. Optional.
	BuildSignature    string `toml:"build_signature"`
	InstanceSignature string `toml:"instance_signature"`
	// ContainerEgress bounds what renters may ask their containers to
	// reach at deploy time (egress=HOST[:PORT]): "host:port", "host:*",
	// "*.domain:port" or "*.domain:*". Empty (the default): nothing.
	ContainerEgress []string `toml:"container_egress"`
	// PullTimeout bounds one image pull; a pull that takes longer fails,
	// and the paid container keeps its balance for a retry.
	PullTimeout time.Duration `toml:"pull_timeout"`
	// ContainerSubnets is the private IPv4 range each container's own
	// network takes a /29 of (the engine's default pools would stop at
	// about thirty networks). Pick one no route of the engine's host uses.
	ContainerSubnets string `toml:"container_subnets"`
}

// ContainerSubnetBits is the prefix length of each container network's
// subnet (deployer/docker.SubnetBits).
const ContainerSubnetBits = 29

// Unit is the slice of the instance one unit buys.
type Unit struct {
	MilliCPUs int64 `toml:"millicpus"`  // 1000 = one CPU
	MemoryMiB int64 `toml:"memory_mib"` // also the swap limit: no swap
	Pids      int64 `toml:"pids"`
	DiskMiB   int64 `toml:"disk_mib"` // enforced where the storage driver can
}

// Pricing is what renters pay and how long things last.
type Pricing struct {
	MsatPerUnitHour int64         `toml:"msat_per_unit_hour"`
	QuoteExpiry     time.Duration `toml:"quote_expiry"` // the invoice's expiry too
	LowBalance      time.Duration `toml:"low_balance"`  // owners are told once when less time is left
	Retention       time.Duration `toml:"retention"`    // paused containers are kept this long
	// Unpaid work anyone can ask for, for free: quotes waiting for
	// payment instance-wide (0: 4 × instance.capacity_units) and per
	// sender, and top-up invoices waiting per container.
	OpenQuotes          int64 `toml:"open_quotes"`
	OpenQuotesPerSender int64 `toml:"open_quotes_per_sender"`
	OpenTopups          int64 `toml:"open_topups"`
}

// Lightning is the operator's LND, reached over gRPC with an invoice
// macaroon. Empty grpc in dev mode starts a regtest pair.
type Lightning struct {
	GRPC     string `toml:"grpc"`     // host:port
	TLSCert  string `toml:"tls_cert"` // path to the node's tls.cert (pinned)
	Macaroon string `toml:"macaroon"` // path to invoice.macaroon (or a baked one)
}

// HTTP is the instance's read-only HTTP API.
type HTTP struct {
	Listen string `toml:"listen"` // host:port; "" turns it off
	// PublicURL is the origin clients reach the API at (https://host);
	// lightning addresses and NIP-05 names use its host. Empty in dev
	// mode means http://<listen address>.
	PublicURL string `toml:"public_url"`
	// TLS terminates TLS on the served connections: "" (none: plain
	// HTTP, dev), "dev" (certificates from a dev CA in the data dir,
	// dev-ca.pem) or "acme" (certificates from an ACME CA, TLS-ALPN-01,
	// for the public host and NAME.<public host> of containers serving
	// HTTP).
	TLS string `toml:"tls"`
	// ACMEDirectory is the ACME CA's directory URL (default Let's
	// Encrypt's); its host must be reachable (enclave.egress).
	ACMEDirectory string `toml:"acme_directory"`
	ACMEEmail     string `toml:"acme_email"`
	// LNURL callbacks (zaps, lightning addresses) each create an invoice
	// at the node, for free: at most this many a minute per client
	// address (IPv4 address or IPv6 /64) and instance-wide.
	InvoicesPerClientPerMinute int64 `toml:"invoices_per_client_per_minute"`
	InvoicesPerMinute          int64 `toml:"invoices_per_minute"`
}

// Metrics is the operator's Prometheus endpoint (package metrics): what it
// shows reaches the parent, so it holds nothing private.
type Metrics struct {
	// Listen is where GET /metrics is served ("" turns it off; e.g.
	// 127.0.0.1:9464). An instance in dev mode listens there itself.
	// Split in two, the parent listens there and forwards each
	// connection over the link to the enclave's ingress port of the same
	// number (Port), where the enclave serves the metrics; so both sides
	// set the same port, which must be neither enclave.ingress_port nor
	// one parent.forward targets.
	Listen string `toml:"listen"`
}

// Port is the port of Listen: the enclave's ingress port of the
// metrics (0 if off).
func (m Metrics) Port() int {
	_, p, err := net.SplitHostPort(m.Listen)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(p)
	return n
}

// Log configures structured logging.
type Log struct {
	Level  string `toml:"level"`  // debug, info, warn, error
	Format string `toml:"format"` // text, json
}

// Nostr configures the instance's relays.
type Nostr struct {
	// Relays the instance reads from and publishes to. Empty in dev mode means
	// its embedded relay.
	Relays []string `toml:"relays"`
	// AnnounceRelays are more relays the instance publishes its
	// announcement, and its containers' profiles and status events, to
	// without reading from them: where explorers and clients look (the
	// enclaved.org explorer reads only wss://relay.nostr.band/all).
	AnnounceRelays []string `toml:"announce_relays"`
	// CommandsPerMinute a pubkey may send; one more gets "slow down", the
	// rest of the minute is ignored.
	CommandsPerMinute int64 `toml:"commands_per_minute"`
}

// Dev configures what only dev mode runs.
type Dev struct {
	// RelayListen is the embedded relay's listen address.
	RelayListen string `toml:"relay_listen"`
	// RegistryListen is where the demo image's registry listens (when
	// `enclaved dev -demo` serves one).
	RegistryListen string `toml:"registry_listen"`
}

// Default returns the configuration used when nothing is set.
func Default() Config {
	return Config{
		InstanceConfig: InstanceConfig{
			Common: Common{
				DataDir: "~/.enclaved",
				Log:     Log{Level: "info", Format: "text"},
				Nostr:   Nostr{CommandsPerMinute: 10},
			},
			Instance: Instance{Name: "enclaved", CapacityUnits: 8, PullTimeout: 10 * time.Minute, ContainerSubnets: "10.200.0.0/14"},
			Unit:     Unit{MilliCPUs: 250, MemoryMiB: 128, Pids: 128, DiskMiB: 512},
			Pricing: Pricing{MsatPerUnitHour: 10_000, QuoteExpiry: 10 * time.Minute,
				LowBalance: time.Hour, Retention: 72 * time.Hour, OpenQuotesPerSender: 3, OpenTopups: 5},
			HTTP:     HTTP{Listen: "127.0.0.1:8080", InvoicesPerClientPerMinute: 10, InvoicesPerMinute: 120},
			Attest:   Attest{Mode: "dev"},
			Enclave:  Enclave{Parent: "vsock:3:7000", IngressPort: 443},
			Backup:   Backup{Delay: 2 * time.Second, Interval: 10 * time.Minute, VolumeInterval: 10 * time.Minute, BlobTimeout: time.Minute, BlobRateKiB: 1024, Ref: "https://github.com/enclaved/enclaved"},
			KeyStore: KeyStore{Refresh: time.Hour, TTL: 72 * time.Hour},
		},
		Dev: Dev{RelayListen: "127.0.0.1:7447", RegistryListen: "127.0.0.1:7448"},
		Parent: Parent{Listen: "vsock:7000", Forward: []string{"0.0.0.0:443=443"}, EIF: "enclaved.eif",
			EnclaveCPUs: 2, EnclaveMemoryMB: 4096, EnclaveCID: 16},
	}
}

// Sources says where Load reads from, in increasing precedence.
type Sources struct {
	File    string   // TOML file; "" for none
	Environ []string // KEY=VALUE pairs, as os.Environ returns
	Sets    []string // key=value pairs from -set flags
}

// Load applies file, environment and flags over the defaults, expands ~ in
// paths and validates the result.
func Load(src Sources) (Config, error) {
	c := Default()
	if src.File != "" {
		if err := c.LoadFile(src.File); err != nil {
			return c, err
		}
	}
	if err := c.ApplyEnv(src.Environ); err != nil {
		return c, err
	}
	for _, kv := range src.Sets {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return c, fmt.Errorf("-set %q: want key=value", kv)
		}
		if err := c.Set(strings.TrimSpace(k), v); err != nil {
			return c, fmt.Errorf("-set %w", err)
		}
	}
	if strings.HasPrefix(c.DataDir, "~/") || c.DataDir == "~" {
		home, err := os.UserHomeDir()
		if err != nil {
			return c, fmt.Errorf("data_dir: cannot expand ~: %w", err)
		}
		c.DataDir = filepath.Join(home, strings.TrimPrefix(c.DataDir, "~"))
	}
	return c, c.Validate()
}

// LoadFile decodes a TOML file over c. Unknown keys are errors.
func (c *Config) LoadFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	return c.decode(path, b)
}

func (c *Config) decode(name string, b []byte) error {
	// Parse into a generic tree first, then assign key by key, so that every
	// error (unknown key, wrong type) names the dotted key.
	var tree map[string]any
	if err := toml.Unmarshal(b, &tree); err != nil {
		var derr *toml.DecodeError
		if errors.As(err, &derr) {
			row, col := derr.Position()
			return fmt.Errorf("config file %s:%d:%d: %s", name, row, col, derr.Error())
		}
		return fmt.Errorf("config file %s: %w", name, err)
	}
	if err := assignTree(reflect.ValueOf(c).Elem(), "", tree); err != nil {
		return fmt.Errorf("config file %s: %w", name, err)
	}
	return nil
}

func assignTree(v reflect.Value, prefix string, tree map[string]any) error {
	fields := map[string]reflect.Value{}
	tables(v, func(tag string, f reflect.Value) { fields[tag] = f })
	names := make([]string, 0, len(tree))
	for k := range tree {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		key, val := prefix+k, tree[k]
		f, ok := fields[k]
		if !ok {
			return fmt.Errorf("unknown key %s (known keys: %s)", key, strings.Join(Keys(), ", "))
		}
		if err := assign(f, key, val); err != nil {
			return err
		}
	}
	return nil
}

func assign(f reflect.Value, key string, val any) error {
	wrong := func(want string) error {
		return fmt.Errorf("%s: want %s, got %T %v", key, want, val, val)
	}
	if f.Type() == durationType {
		s, ok := val.(string)
		if !ok {
			return wrong(`a duration such as "10m" or "72h"`)
		}
		return setDuration(f, key, s)
	}
	switch f.Kind() {
	case reflect.Struct:
		sub, ok := val.(map[string]any)
		if !ok {
			return wrong("a table")
		}
		return assignTree(f, key+".", sub)
	case reflect.String:
		s, ok := val.(string)
		if !ok {
			return wrong("a string")
		}
		f.SetString(s)
	case reflect.Bool:
		b, ok := val.(bool)
		if !ok {
			return wrong("true or false")
		}
		f.SetBool(b)
	case reflect.Int, reflect.Int64:
		n, ok := val.(int64)
		if !ok {
			return wrong("a whole number")
		}
		f.SetInt(n)
	case reflect.Slice:
		list, ok := val.([]any)
		if !ok {
			return wrong("a list of strings")
		}
		items := make([]string, 0, len(list))
		for _, it := range list {
			s, ok := it.(string)
			if !ok {
				return wrong("a list of strings")
			}
			items = append(items, s)
		}
		f.Set(reflect.ValueOf(items))
	default:
		return fmt.Errorf("%s: cannot be set from a file", key)
	}
	return nil
}
