// Package hostrouter is the instance's public HTTPS side: TLS terminates
// here, inside the enclave, so the parent forwarding the connections sees
// only ciphertext; requests for NAME.<public host> go to that container's
// HTTP port, all others to the instance's API.
//
// It runs inside the enclave. Certificates come from an ACME CA
// (autocert, TLS-ALPN-01 on the forwarded port, only for the public host
// and the names of containers that serve HTTP) or, in dev mode, from a dev
// CA kept in the data dir.
package hostrouter

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// nameRE is a container name (nip's deploy grammar).
var nameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)

// Lookup finds the address (ip:port) of the HTTP port of the running
// container called name.
type Lookup func(ctx context.Context, name string) (addr string, ok bool)

// Router sends NAME.Host to container NAME and everything else to API.
type Router struct {
	Host   string // the public host name (no port)
	API    http.Handler
	Lookup Lookup
	// Transport reaches containers (default: a plain one with timeouts).
	Transport http.RoundTripper
}

// ContainerName is the container a request host names, if any.
func (rt *Router) ContainerName(host string) (string, bool) {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	name, ok := strings.CutSuffix(host, "."+strings.ToLower(strings.TrimSuffix(rt.Host, ".")))
	if !ok || !nameRE.MatchString(name) {
		return "", false
	}
	return name, true
}

func (rt *Router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name, ok := rt.ContainerName(r.Host)
	if !ok {
		rt.API.ServeHTTP(w, r)
		return
	}
	addr, ok := rt.Lookup(r.Context(), name)
	if !ok {
		http.Error(w, "no running container called "+name+" serves HTTP here", http.StatusNotFound)
		return
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(&url.URL{Scheme: "http", Host: addr})
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
		},
		Transport: rt.transport(),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			http.Error(w, name+" did not answer", http.StatusBadGateway)
		},
	}
	proxy.ServeHTTP(w, r)
}

var defaultTransport = &http.Transport{
	DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
	ResponseHeaderTimeout: 60 * time.Second,
	MaxIdleConnsPerHost:   4,
	IdleConnTimeout:       90 * time.Second,
}

func (rt *Router) transport() http.RoundTripper {
	if rt.Transport != nil {
		return rt.Transport
	}
	return defaultTransport
}

// DevCA issues certificates for any name from a CA kept in a directory
// (dev-ca.pem, dev-ca.key). Clients trust dev-ca.pem to reach a dev
// instance over HTTPS.
type DevCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey

	mu    sync.Mutex
	leafs map[string]*tls.Certificate
}

// LoadOrCreateDevCA reads the dev CA in dir, creating it the first time.
func LoadOrCreateDevCA(dir string) (*DevCA, error) {
	certPath, keyPath := filepath.Join(dir, "dev-ca.pem"), filepath.Join(dir, "dev-ca.key")
	ca := &DevCA{leafs: map[string]*tls.Certificate{}}
	if pair, err := tls.LoadX509KeyPair(certPath, keyPath); err == nil {
		key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("dev CA %s: not an ECDSA key", keyPath)
		}
		if ca.cert, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("dev CA %s: %w", certPath, err)
		}
		ca.key = key
		return ca, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("dev CA: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "enclaved dev CA", Organization: []string{"enclaved dev"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, err
	}
	ca.cert, _ = x509.ParseCertificate(der)
	ca.key = key
	return ca, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

// Pool is a certificate pool holding the CA, for clients.
func (ca *DevCA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// GetCertificate issues (once per name) a certificate for the name the
// client asked for; fallback is used when it names none.
func (ca *DevCA) GetCertificate(fallback string) func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
		if name == "" {
			name = fallback
		}
		ca.mu.Lock()
		defer ca.mu.Unlock()
		if c, ok := ca.leafs[name]; ok && time.Until(c.Leaf.NotAfter) > time.Hour {
			return c, nil
		}
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		now := time.Now()
		tmpl := &x509.Certificate{
			SerialNumber: serial(),
			Subject:      pkix.Name{CommonName: name},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.AddDate(0, 0, 30),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}
		if ip := net.ParseIP(name); ip != nil {
			tmpl.IPAddresses = []net.IP{ip}
		} else {
			tmpl.DNSNames = []string{name}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
		if err != nil {
			return nil, err
		}
		leaf, _ := x509.ParseCertificate(der)
		c := &tls.Certificate{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: key, Leaf: leaf}
		ca.leafs[name] = c
		return c, nil
	}
}

// ACME is how certificates are obtained from an ACME CA.
type ACME struct {
	Directory string // default Let's Encrypt's
	Email     string
	CacheDir  string // account key and certificates (the enclave's RAM disk)
	// HTTPClient reaches the CA (through the parent's egress).
	HTTPClient *http.Client
	// Allowed says whether a certificate may be asked for host: the public
	// host, and NAME.<public host> for containers serving HTTP.
	Allowed func(ctx context.Context, host string) bool
}

// Manager is the autocert manager for a.
func (a ACME) Manager() *autocert.Manager {
	dir := a.Directory
	if dir == "" {
		dir = acme.LetsEncryptURL
	}
	return &autocert.Manager{
		Prompt: autocert.AcceptTOS,
		Cache:  autocert.DirCache(a.CacheDir),
		Email:  a.Email,
		Client: &acme.Client{DirectoryURL: dir, HTTPClient: a.HTTPClient},
		HostPolicy: func(ctx context.Context, host string) error {
			if !a.Allowed(ctx, host) {
				return fmt.Errorf("no certificate for %q here", host)
			}
			return nil
		},
	}
}

// ServerConfig is the TLS configuration of the public listener: HTTP/1.1
// and HTTP/2, and, for ACME, the TLS-ALPN-01 challenge protocol.
func ServerConfig(get func(*tls.ClientHelloInfo) (*tls.Certificate, error), acmeChallenges bool) *tls.Config {
	c := &tls.Config{GetCertificate: get, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}
	if acmeChallenges {
		c.NextProtos = append(c.NextProtos, acme.ALPNProto)
	}
	return c
}
