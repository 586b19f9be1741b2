package config

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/enclaved/enclaved/egress"
)

// Validate reports every invalid key, each naming the key and why.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.DataDir == "" {
		bad("data_dir", "must not be empty")
	}
	for i, f := range c.Parent.Forward {
		addr, port, ok := strings.Cut(f, "=")
		n, err := strconv.Atoi(port)
		if _, _, aerr := net.SplitHostPort(addr); !ok || aerr != nil || err != nil || n <= 0 || n > 65535 {
			bad("parent.forward", "entry %d %q is not ADDR=PORT (0.0.0.0:443=443)", i+1, f)
		}
	}
	if c.Parent.EnclaveCPUs <= 0 || c.Parent.EnclaveMemoryMB < 64 {
		bad("parent.enclave_cpus/enclave_memory_mib", "want at least 1 CPU and 64 MiB")
	}
	if c.Parent.EnclaveCID < 4 || c.Parent.EnclaveCID > 1<<32-2 {
		bad("parent.enclave_cid", "%d: 0 to 3 are reserved (3 is the parent); want 4 to 4294967294", c.Parent.EnclaveCID)
	}
	if c.Enclave.IngressPort <= 0 || c.Enclave.IngressPort > 65535 {
		bad("enclave.ingress_port", "%d is not a port", c.Enclave.IngressPort)
	}
	for i, p := range c.Instance.ContainerEgress {
		if !egress.ValidPattern(p) {
			bad("instance.container_egress", "entry %d %q is not host:port, host:*, *.domain:port or *.domain:*", i+1, p)
		}
	}
	if msg := checkSubnets(c.Instance.ContainerSubnets, c.Instance.CapacityUnits); msg != "" {
		bad("instance.container_subnets", "%q %s", c.Instance.ContainerSubnets, msg)
	}
	if !oneOf(c.HTTP.TLS, "", "dev", "acme") {
		bad("http.tls", "%q is not one of \"\", dev, acme", c.HTTP.TLS)
	}
	if c.HTTP.TLS == "acme" && !strings.HasPrefix(c.HTTP.PublicURL, "https://") {
		bad("http.tls", "acme needs http.public_url = https://HOST (the certificate's name)")
	}
	if !oneOf(c.Attest.Mode, "nitro", "dev") {
		bad("attest.mode", "%q is not one of nitro, dev", c.Attest.Mode)
	}
	if c.Attest.Mode == "nitro" && (c.Attest.DevInstanceID != "" || c.Attest.DevSigningCert != "") {
		bad("attest.dev_instance_id/dev_signing_cert", "only for attest.mode = dev")
	}
	if !oneOf(c.Backup.Mode, "", "keystore") {
		bad("backup.mode", "%q is not one of \"\", keystore", c.Backup.Mode)
	}
	if c.Attest.Mode == "nitro" && c.Backup.Mode != "keystore" {
		bad("backup.mode", "attest.mode = nitro needs backup.mode = keystore: a Nitro enclave has only RAM, so without backups a restart would lose every balance and the instance key")
	}
	if c.Backup.Mode == "keystore" && c.KeyStore.Pubkey == "" {
		bad("keystore.pubkey", "backup.mode = keystore needs the key store's pubkey")
	}
	for i, m := range c.Backup.Maintainers {
		if len(m) != 64 {
			bad("backup.maintainers", "entry %d %q is not a hex pubkey", i+1, m)
		}
	}
	if c.Backup.Threshold < 0 || c.Backup.Threshold > int64(len(c.Backup.Maintainers)) {
		bad("backup.threshold", "%d: want 0 (all) to %d", c.Backup.Threshold, len(c.Backup.Maintainers))
	}
	if c.Backup.Delay < 0 || c.Backup.Interval <= 0 || c.Backup.VolumeInterval < 0 || c.KeyStore.Refresh <= 0 || c.KeyStore.TTL <= c.KeyStore.Refresh {
		bad("backup.delay/interval/volume_interval, keystore.refresh/ttl", "want delay ≥ 0, interval > 0, volume_interval ≥ 0 and 0 < refresh < ttl")
	}
	if c.Backup.BlobTimeout <= 0 || c.Backup.BlobRateKiB <= 0 {
		bad("backup.blob_timeout/blob_rate_kib", "want both > 0")
	}
	if !oneOf(c.Log.Level, "debug", "info", "warn", "error") {
		bad("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	if !oneOf(c.Log.Format, "text", "json") {
		bad("log.format", "%q is not one of text, json", c.Log.Format)
	}
	for _, list := range []struct {
		key    string
		relays []string
	}{{"nostr.relays", c.Nostr.Relays}, {"nostr.announce_relays", c.Nostr.AnnounceRelays}, {"keystore.relays", c.KeyStore.Relays}} {
		for i, r := range list.relays {
			if u, err := url.Parse(r); err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
				bad(list.key, "entry %d %q is not a ws:// or wss:// URL", i+1, r)
			}
		}
	}
	for _, kv := range [][2]string{{"dev.relay_listen", c.Dev.RelayListen}, {"dev.registry_listen", c.Dev.RegistryListen}} {
		key, addr := kv[0], kv[1]
		if addr == "" {
			continue
		}
		if _, port, err := net.SplitHostPort(addr); err != nil {
			bad(key, "%q is not host:port", addr)
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			bad(key, "port %q is not a number from 0 to 65535", port)
		}
	}
	positive := map[string]int64{
		"instance.capacity_units": c.Instance.CapacityUnits, "nostr.commands_per_minute": c.Nostr.CommandsPerMinute, "unit.millicpus": c.Unit.MilliCPUs,
		"unit.memory_mib": c.Unit.MemoryMiB, "unit.pids": c.Unit.Pids, "pricing.msat_per_unit_hour": c.Pricing.MsatPerUnitHour,
		"pricing.quote_expiry": int64(c.Pricing.QuoteExpiry), "pricing.retention": int64(c.Pricing.Retention),
		"instance.pull_timeout": int64(c.Instance.PullTimeout), "pricing.open_quotes_per_sender": c.Pricing.OpenQuotesPerSender,
		"pricing.open_topups": c.Pricing.OpenTopups, "http.invoices_per_minute": c.HTTP.InvoicesPerMinute,
		"http.invoices_per_client_per_minute": c.HTTP.InvoicesPerClientPerMinute,
	}
	if c.Pricing.OpenQuotes < 0 {
		bad("pricing.open_quotes", "must be 0 (4 × instance.capacity_units) or more")
	}
	for _, k := range slices.Sorted(maps.Keys(positive)) {
		if positive[k] <= 0 {
			bad(k, "must be more than zero")
		}
	}
	if c.Unit.DiskMiB < 0 || c.Pricing.LowBalance < 0 {
		bad("unit.disk_mib/pricing.low_balance", "must not be negative")
	}
	if c.Unit.MemoryMiB > 0 && c.Unit.MemoryMiB < 6 {
		bad("unit.memory_mib", "Docker needs at least 6 MiB")
	}
	if c.Pricing.QuoteExpiry > 0 && c.Pricing.QuoteExpiry < time.Minute {
		bad("pricing.quote_expiry", "at least 1m, so renters can pay")
	}
	if (c.Lightning.TLSCert != "" || c.Lightning.Macaroon != "") && c.Lightning.GRPC == "" {
		bad("lightning.grpc", "must be set when tls_cert or macaroon is")
	}
	if c.HTTP.PublicURL != "" {
		if u, err := url.Parse(c.HTTP.PublicURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			bad("http.public_url", "%q is not an origin such as https://enclaved.example.com", c.HTTP.PublicURL)
		}
	}
	if msg := c.checkMetrics(); msg != "" {
		bad("metrics.listen", "%q %s", c.Metrics.Listen, msg)
	}
	for _, kv := range [][2]string{{"http.listen", c.HTTP.Listen}, {"lightning.grpc", c.Lightning.GRPC}, {"enclave.connect_proxy", c.Enclave.ConnectProxy}} {
		if _, _, err := net.SplitHostPort(kv[1]); kv[1] != "" && err != nil {
			bad(kv[0], "%q is not host:port", kv[1])
		}
	}
	return errors.Join(errs...)
}

// checkMetrics says what is wrong with metrics.listen ("" if nothing):
// split in two, the enclave serves the metrics on the ingress port of its
// number, which must be neither the public HTTP port nor forwarded
// publicly.
func (c Config) checkMetrics() string {
	if c.Metrics.Listen == "" {
		return ""
	}
	_, port, err := net.SplitHostPort(c.Metrics.Listen)
	n, perr := strconv.Atoi(port)
	switch {
	case err != nil:
		return "is not host:port, such as 127.0.0.1:9464"
	case perr != nil || n < 0 || n > 65535:
		return fmt.Sprintf("port %q is not a number from 0 to 65535", port)
	case int64(n) == c.Enclave.IngressPort:
		return fmt.Sprintf("has the port of enclave.ingress_port (%d): the enclave serves its metrics on the ingress port of that number, never on the public one", n)
	}
	for _, f := range c.Parent.Forward {
		if _, target, _ := strings.Cut(f, "="); target == port {
			return fmt.Sprintf("has the port parent.forward %q forwards public connections to: the enclave serves its metrics on the ingress port of that number, never publicly", f)
		}
	}
	return ""
}

// checkSubnets says what is wrong with s as the range of container
// networks' subnets ("" if nothing): a private IPv4 CIDR from /8 to /29
// with a /29 for each container that can run at once (one per unit).
func checkSubnets(s string, units int64) string {
	p, err := netip.ParsePrefix(s)
	switch {
	case err != nil:
		return "is not a CIDR such as 10.200.0.0/14"
	case !p.Addr().Is4() || !p.Addr().IsPrivate():
		return "is not a private IPv4 range (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16)"
	case p != p.Masked():
		return fmt.Sprintf("has host bits set: the range is %s", p.Masked())
	case p.Bits() < 8 || p.Bits() > ContainerSubnetBits:
		return fmt.Sprintf("want a prefix from /8 to /%d", ContainerSubnetBits)
	}
	if n := int64(1) << (ContainerSubnetBits - p.Bits()); n < units {
		return fmt.Sprintf("holds %d /%d subnets, fewer than instance.capacity_units (%d containers of one unit each)", n, ContainerSubnetBits, units)
	}
	return ""
}

func oneOf(s string, allowed ...string) bool {
	for _, a := range allowed {
		if s == a {
			return true
		}
	}
	return false
}
