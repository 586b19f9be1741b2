package enclave

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/enclaved/enclaved/attest"
	"github.com/enclaved/enclaved/config"
	"github.com/enclaved/enclaved/egress"
	"github.com/enclaved/enclaved/egressproxy"
	"github.com/enclaved/enclaved/hostrouter"
	"github.com/enclaved/enclaved/tunnel"
)

// OpenAttester is the attester attest.mode chooses: the Nitro Security
// Module, or the dev attestor with its root in the data dir (reporting the
// PCR4 and PCR8 the attest.dev_* keys simulate).
func OpenAttester(cfg config.InstanceConfig) (attest.Attester, error) {
	if cfg.Attest.Mode == "nitro" {
		return attest.OpenNitro()
	}
	binHash, err := attest.BinaryHash()
	if err != nil {
		return nil, err
	}
	rootDir := cfg.Attest.DevRootDir
	if rootDir == "" {
		rootDir = cfg.DataDir
	}
	dev, err := attest.LoadOrCreateDev(rootDir, binHash, time.Now)
	if err != nil {
		return nil, err
	}
	var der []byte
	if f := cfg.Attest.DevSigningCert; f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("attest.dev_signing_cert: %w", err)
		}
		blk, _ := pem.Decode(b)
		if blk == nil || blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("attest.dev_signing_cert: %s is not a PEM certificate", f)
		}
		der = blk.Bytes
	}
	dev.Simulate(cfg.Attest.DevInstanceID, der)
	return dev, nil
}

// containerDial is how containers' allowed connections leave, checked at
// dial time against the operator's policy (which may have narrowed since a
// container was deployed): dial if given (the enclave's tunnel.Egress under
// that policy), else this host's network.
func containerDial(cfg config.InstanceConfig, dial egressproxy.DialFunc) egressproxy.DialFunc {
	if dial != nil {
		return dial
	}
	policy := cfg.Instance.ContainerEgress
	var d net.Dialer
	d.Timeout = 15 * time.Second
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if !egress.Allowed(policy, addr) {
			return nil, &tunnel.DeniedError{Addr: addr}
		}
		return d.DialContext(ctx, network, addr)
	}
}

// serverTLS is the public listener's TLS (http.tls): none, the dev CA in
// the data dir, or ACME certificates for the names serves allows.
func serverTLS(cfg config.InstanceConfig, serves func(context.Context, string) bool) (*tls.Config, error) {
	switch cfg.HTTP.TLS {
	case "dev":
		ca, err := hostrouter.LoadOrCreateDevCA(cfg.DataDir)
		if err != nil {
			return nil, err
		}
		fallback := "localhost"
		if u, err := url.Parse(cfg.HTTP.PublicURL); err == nil && u.Hostname() != "" {
			fallback = u.Hostname()
		}
		return hostrouter.ServerConfig(ca.GetCertificate(fallback), false), nil
	case "acme":
		m := hostrouter.ACME{Directory: cfg.HTTP.ACMEDirectory, Email: cfg.HTTP.ACMEEmail,
			CacheDir: filepath.Join(cfg.DataDir, "acme"), Allowed: serves}.Manager()
		return hostrouter.ServerConfig(m.GetCertificate, true), nil
	}
	return nil, nil
}
