package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "enclaved.toml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPrecedenceDefaultsFileEnvFlags(t *testing.T) {
	file := writeFile(t, `
data_dir = "/srv/enclaved"
[log]
level = "debug"
format = "json"
[nostr]
relays = ["wss://relay.example"]
`)
	c, err := Load(Sources{
		File:    file,
		Environ: []string{"ENCLAVED_LOG_LEVEL=warn", "ENCLAVED_NOSTR_RELAYS=ws://127.0.0.1:1, wss://b.example", "ENCLAVED_TOOLS=/x", "PATH=/bin"},
		Sets:    []string{"log.level=error"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "/srv/enclaved" {
		t.Errorf("data_dir = %q, want the file's value", c.DataDir)
	}
	if c.Log.Format != "json" {
		t.Errorf("log.format = %q, want the file's value", c.Log.Format)
	}
	if c.Log.Level != "error" {
		t.Errorf("log.level = %q, want the flag's value over env and file", c.Log.Level)
	}
	if got := strings.Join(c.Nostr.Relays, " "); got != "ws://127.0.0.1:1 wss://b.example" {
		t.Errorf("nostr.relays = %q, want the environment's list", got)
	}
	if c.Dev.RelayListen != Default().Dev.RelayListen {
		t.Errorf("dev.relay_listen = %q, want the default", c.Dev.RelayListen)
	}
}

func TestHomeExpansion(t *testing.T) {
	t.Setenv("HOME", "/home/op")
	c, err := Load(Sources{})
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "/home/op/.enclaved" {
		t.Errorf("data_dir = %q", c.DataDir)
	}
}

// Every bad input gets an error that names the key (or variable) and why.
func TestErrorsNameTheKey(t *testing.T) {
	cases := []struct {
		name string
		src  Sources
		want []string
	}{
		{"unknown file key", Sources{File: "FILE:[log]\nlevl = \"info\"\n"}, []string{"unknown key log.levl"}},
		{"wrong type in file", Sources{File: "FILE:[log]\nlevel = 3\n"}, []string{"log.level"}},
		{"syntax error", Sources{File: "FILE:data_dir = \n"}, []string{":1:"}},
		{"bad level", Sources{Sets: []string{"log.level=loud"}}, []string{"log.level", `"loud" is not one of`}},
		{"bad format from env", Sources{Environ: []string{"ENCLAVED_LOG_FORMAT=xml"}}, []string{"log.format", "xml"}},
		{"bad relay", Sources{Sets: []string{"nostr.relays=https://relay.example"}}, []string{"nostr.relays", "entry 1", "ws://"}},
		{"bad listen", Sources{Sets: []string{"dev.relay_listen=localhost"}}, []string{"dev.relay_listen", "host:port"}},
		{"bad port", Sources{Sets: []string{"dev.relay_listen=127.0.0.1:99999"}}, []string{"dev.relay_listen", "99999"}},
		{"unknown flag key", Sources{Sets: []string{"log.colour=red"}}, []string{"log.colour", "unknown key"}},
		{"flag without =", Sources{Sets: []string{"log.level"}}, []string{"want key=value"}},
		{"empty data dir", Sources{Environ: []string{"ENCLAVED_DATA_DIR="}}, []string{"data_dir", "must not be empty"}},
		{"missing file", Sources{File: "/nonexistent/enclaved.toml"}, []string{"config file", "no such file"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if body, ok := strings.CutPrefix(tc.src.File, "FILE:"); ok {
				tc.src.File = writeFile(t, body)
			}
			_, err := Load(tc.src)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestValidateReportsEveryBadKey(t *testing.T) {
	c := Default()
	c.Log.Level, c.Log.Format = "x", "y"
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "log.level") || !strings.Contains(err.Error(), "log.format") {
		t.Fatalf("want both keys named, got %v", err)
	}
}

func TestEveryKeyHasAnEnvName(t *testing.T) {
	for _, k := range Keys() {
		var c Config
		// Each key must be settable by its environment variable.
		if err := c.ApplyEnv([]string{EnvName(k) + "=1"}); err != nil && strings.Contains(err.Error(), "cannot be set") {
			t.Errorf("%s (%s): %v", k, EnvName(k), err)
		}
	}
	if EnvName("dev.relay_listen") != "ENCLAVED_DEV_RELAY_LISTEN" {
		t.Errorf("EnvName = %s", EnvName("dev.relay_listen"))
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte("data_dir = \"/x\"\n[log]\nlevel = \"debug\"\n"))
	f.Add([]byte("[nostr]\nrelays = [\"ws://a\", 3]\n"))
	f.Add([]byte("[[log]]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c := Default()
		if err := c.decode("fuzz", b); err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		_ = c.Validate()
	})
}

func TestDurationsAndLimits(t *testing.T) {
	c, err := Load(Sources{Sets: []string{"pricing.quote_expiry=15m", "pricing.retention=24h"}})
	if err != nil {
		t.Fatal(err)
	}
	if c.Pricing.QuoteExpiry != 15*time.Minute || c.Pricing.Retention != 24*time.Hour {
		t.Fatalf("durations: %v %v", c.Pricing.QuoteExpiry, c.Pricing.Retention)
	}
	for set, want := range map[string]string{
		"pricing.quote_expiry=soon":  `pricing.quote_expiry: "soon" is not a duration`,
		"pricing.quote_expiry=10s":   "pricing.quote_expiry: at least 1m",
		"instance.capacity_units=0":  "instance.capacity_units: must be more than zero",
		"lightning.tls_cert=/x.cert": "lightning.grpc: must be set",
		"http.listen=8080":           `http.listen: "8080" is not host:port`,
	} {
		_, err := Load(Sources{Sets: []string{set}})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("-set %s: got %v, want an error containing %q", set, err, want)
		}
	}
}

// A Nitro enclave has only RAM: attest.mode = nitro without backups is
// refused, naming the key; the shipped enclave image's configuration
// loads and keeps its state in the key store and the parent's backups.
func TestNitroNeedsBackups(t *testing.T) {
	_, err := Load(Sources{Sets: []string{"attest.mode=nitro"}})
	if err == nil || !strings.Contains(err.Error(), "backup.mode: attest.mode = nitro needs backup.mode = keystore") {
		t.Fatalf("nitro without backups: %v", err)
	}
	c, err := Load(Sources{File: filepath.Join("..", "enclave-image", "enclaved.toml")})
	if err != nil {
		t.Fatalf("the enclave image's configuration: %v", err)
	}
	if c.Attest.Mode != "nitro" || c.Backup.Mode != "keystore" {
		t.Errorf("the enclave image runs attest.mode %q with backup.mode %q", c.Attest.Mode, c.Backup.Mode)
	}
	// The enclaved.org explorer reads announcements only from this relay.
	if !slices.Contains(c.Nostr.AnnounceRelays, "wss://relay.nostr.band/all") {
		t.Errorf("the enclave image does not announce where the explorer reads: nostr.announce_relays %q", c.Nostr.AnnounceRelays)
	}
	if _, err := Load(Sources{Sets: []string{"nostr.announce_relays=https://relay.nostr.band"}}); err == nil || !strings.Contains(err.Error(), "nostr.announce_relays") {
		t.Errorf("an http announce relay: %v", err)
	}
}

// instance.container_subnets is a private IPv4 range with a /29 for each
// container that can run at once.
func TestContainerSubnets(t *testing.T) {
	c, err := Load(Sources{Sets: []string{"instance.container_subnets=172.20.0.0/20", "instance.capacity_units=512"}})
	if err != nil || c.Instance.ContainerSubnets != "172.20.0.0/20" {
		t.Fatalf("a /20 for 512 units: %v %q", err, c.Instance.ContainerSubnets)
	}
	for set, want := range map[string]string{
		"instance.container_subnets=10.200.0.0":      "is not a CIDR",
		"instance.container_subnets=fd00::/64":       "is not a private IPv4 range",
		"instance.container_subnets=8.8.0.0/16":      "is not a private IPv4 range",
		"instance.container_subnets=10.200.1.0/14":   "has host bits set: the range is 10.200.0.0/14",
		"instance.container_subnets=10.200.0.0/30":   "want a prefix from /8 to /29",
		"instance.container_subnets=192.168.0.0/28":  "holds 2 /29 subnets, fewer than instance.capacity_units (8",
		"instance.container_subnets=":                "is not a CIDR",
		"instance.container_subnets=10.200.0.0/14 x": "is not a CIDR",
	} {
		_, err := Load(Sources{Sets: []string{set}})
		if err == nil || !strings.Contains(err.Error(), "instance.container_subnets: ") || !strings.Contains(err.Error(), want) {
			t.Errorf("-set %s: got %v, want an error containing %q", set, err, want)
		}
	}
}

// metrics.listen is one key both sides read: the enclave serves its
// metrics on the ingress port of its number, so that port may be neither
// the public HTTP port nor one parent.forward sends public connections to.
func TestMetricsListen(t *testing.T) {
	for set, want := range map[string]string{
		"metrics.listen=127.0.0.1:9464": "",
		"metrics.listen=":               "",
		"metrics.listen=9464":           "is not host:port",
		"metrics.listen=127.0.0.1:x":    "is not a number",
		"metrics.listen=127.0.0.1:443":  "enclave.ingress_port (443)",
		"metrics.listen=127.0.0.1:8443": `parent.forward "127.0.0.1:8443=8443"`,
	} {
		_, err := Load(Sources{Sets: []string{set, "parent.forward=0.0.0.0:443=443,127.0.0.1:8443=8443"}})
		if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), "metrics.listen") || !strings.Contains(err.Error(), want)) {
			t.Errorf("-set %s: %v, want %q", set, err, want)
		}
	}
	c, _ := Load(Sources{Sets: []string{"metrics.listen=127.0.0.1:9464"}})
	if p := c.ForParent().Metrics.Port(); p != 9464 || c.ForEnclave().Metrics.Port() != 9464 {
		t.Errorf("the parent's and the enclave's metrics port: %d, %d", p, c.ForEnclave().Metrics.Port())
	}
}
