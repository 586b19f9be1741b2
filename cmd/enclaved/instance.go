package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/enclaved/enclaved/attest"
	"github.com/enclaved/enclaved/config"
	"github.com/enclaved/enclaved/enclave"
)

// banner is what an instance prints once it is up: where to reach it.
type banner struct {
	Title string
	// Hints (optional) are the lines printed after the banner for a
	// newcomer to paste (dev mode); without, one "try:" line.
	Hints func(ctx context.Context, cfg config.InstanceConfig, in *enclave.Instance, npub, relay string) string
}

// announce is an enclave.Main's Ready: it prints where to reach the
// instance once it is up, then tells ready (optional).
func announce(b banner, stdout io.Writer, ready func(devInfo)) func(context.Context, enclave.Up) {
	return func(ctx context.Context, up enclave.Up) {
		m := up.Main
		cfg := m.Config
		// One write, so no log line lands inside it.
		var sb strings.Builder
		dev := attest.IsDev(up.Attester)
		if dev {
			fmt.Fprintf(&sb, "%s (dev attestation; not a Nitro enclave)\n", b.Title)
		} else {
			fmt.Fprintf(&sb, "%s (%s attestation)\n", b.Title, up.Attester.Mode())
		}
		fmt.Fprintf(&sb, "  npub:     %s\n", up.Key.Npub())
		for _, r := range m.Relays {
			fmt.Fprintf(&sb, "  relay:    %s\n", r)
		}
		if m.HTTPListener != nil && cfg.HTTP.PublicURL != "" {
			fmt.Fprintf(&sb, "  http:     %s/api/v1/instance\n", strings.TrimSuffix(cfg.HTTP.PublicURL, "/"))
		} else if up.HTTPAddr != "" {
			fmt.Fprintf(&sb, "  http:     http://%s/api/v1/instance\n", up.HTTPAddr)
		}
		if up.MetricsAddr != "" {
			fmt.Fprintf(&sb, "  metrics:  http://%s/metrics\n", up.MetricsAddr)
		} else if m.MetricsListener != nil {
			fmt.Fprintf(&sb, "  metrics:  enclave port %d (the parent serves it on its metrics.listen)\n", cfg.Metrics.Port())
		}
		fmt.Fprintf(&sb, "  data dir: %s\n", cfg.DataDir)
		if dev {
			fmt.Fprintf(&sb, "  dev root: %s\n", filepath.Join(cfg.DataDir, "dev-root.pem"))
		}
		if cfg.HTTP.TLS == "dev" {
			fmt.Fprintf(&sb, "  dev CA:   %s\n", filepath.Join(cfg.DataDir, "dev-ca.pem"))
		}
		if b.Hints != nil {
			sb.WriteString(b.Hints(ctx, cfg, up.Instance, up.Key.Npub(), m.Relays[0]))
		} else {
			fmt.Fprintf(&sb, "try:       enclaved dm -relay %s %s help\n", m.Relays[0], up.Key.Npub())
		}
		io.WriteString(stdout, sb.String())
		if ready != nil {
			ready(devInfo{Npub: up.Key.Npub(), Pubkey: up.Key.PublicKey(), RelayURL: m.Relays[0], HTTPAddr: up.HTTPAddr})
		}
	}
}
