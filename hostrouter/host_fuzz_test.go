package hostrouter_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/enclaved/enclaved/hostrouter"
)

var (
	containerNameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)
	asciiHost       = regexp.MustCompile(`^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$`)
)

// FuzzContainerName feeds Host headers (and public host names) to
// ContainerName: a name it finds is a container name, and the host is
// exactly that name under the public host (case, a trailing dot and a
// port aside); the name under the public host, spelt any of those ways,
// gives the name back.
func FuzzContainerName(f *testing.F) {
	for _, h := range []string{"web.enclaved.example.com", "WEB.enclaved.example.com.:443", "a-1.enclaved.example.com:8443",
		"enclaved.example.com", "x.y.enclaved.example.com", "web.enclaved.example.com.evil", "[::1]:443", "web.enclaved.example.com:",
		"web..enclaved.example.com", "web.enclaved.example.com..", "wEb.ENCLAVED.example.com:99999", "\u212a.enclaved.example.com"} {
		f.Add(h, "Enclaved.Example.com")
	}
	f.Add("web.localhost:8443", "localhost")
	f.Add("web.", "")
	f.Fuzz(func(t *testing.T, host, public string) {
		r := &hostrouter.Router{Host: public}
		name, ok := r.ContainerName(host)
		if !ok {
			if name != "" {
				t.Fatalf("no container, but the name %q", name)
			}
		} else {
			if !containerNameRE.MatchString(name) {
				t.Fatalf("%q is not a container name", name)
			}
			h := host
			if hh, _, err := net.SplitHostPort(h); err == nil {
				h = hh
			}
			if !strings.EqualFold(strings.TrimSuffix(h, "."), name+"."+strings.TrimSuffix(public, ".")) {
				t.Fatalf("%q names container %q under %q", host, name, public)
			}
		}
		base := strings.TrimSuffix(public, ".")
		if !asciiHost.MatchString(base) {
			return
		}
		for _, n := range []string{"web", "a-1", name} {
			if !containerNameRE.MatchString(n) {
				continue
			}
			for _, spelt := range []string{n + "." + base, strings.ToUpper(n + "." + base), n + "." + base + ".", net.JoinHostPort(n+"."+base, "443")} {
				if got, ok := r.ContainerName(spelt); !ok || got != n {
					t.Fatalf("ContainerName(%q) = %q, %v; want %q", spelt, got, ok, n)
				}
			}
		}
	})
}

// FuzzACMEName sends TLS hellos naming the fuzzer's server name to the
// ACME manager, whose policy is the instance's (the public host, and
// NAME.<public host> for containers that serve HTTP, through
// ContainerName): the CA is asked only when the policy allowed the name,
// and the policy only ever allows a name in its one canonical spelling
// (autocert drops a trailing dot after asking it), so no certificate is
// asked for under another.
func FuzzACMEName(f *testing.F) {
	for _, s := range []string{"web.enclaved.example.com", "WEB.enclaved.example.com.", "web.enclaved.example.com:443",
		"enclaved.example.com", "other.enclaved.example.com", "x.web.enclaved.example.com", "xn--wb-gka.enclaved.example.com",
		"wéb.enclaved.example.com", "web.enclaved.example.com/", "127.0.0.1", "", "web"} {
		f.Add(s)
	}
	const public = "enclaved.example.com"
	var contacts atomic.Int64
	ca := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		contacts.Add(1)
		http.Error(w, "no directory here", http.StatusNotFound) // 5xx would be retried
	}))
	f.Cleanup(ca.Close)
	router := &hostrouter.Router{Host: public}
	var allowed atomic.Pointer[string]
	m := hostrouter.ACME{Directory: ca.URL, CacheDir: f.TempDir(), HTTPClient: ca.Client(),
		Allowed: func(ctx context.Context, host string) bool {
			// enclave.Instance.ServesHost, with "web" the one running
			// container that serves HTTP.
			ok := strings.EqualFold(host, public)
			if name, found := router.ContainerName(host); found && name == "web" {
				ok = true
			}
			if ok {
				allowed.Store(&host)
			}
			return ok
		}}.Manager()
	f.Fuzz(func(t *testing.T, sni string) {
		allowed.Store(nil)
		before := contacts.Load()
		c, err := m.GetCertificate(&tls.ClientHelloInfo{ServerName: sni, SupportedProtos: []string{"h2"},
			SignatureSchemes: []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256}, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
			SupportedVersions: []uint16{tls.VersionTLS13}})
		if err == nil || c != nil {
			t.Fatalf("a certificate from a CA that is down: %v", err)
		}
		// autocert asks the policy before it drops a trailing dot.
		h := allowed.Load()
		if h != nil && strings.TrimSuffix(*h, ".") != public && strings.TrimSuffix(*h, ".") != "web."+public {
			t.Fatalf("the policy allowed %q (from %q), not a canonical name", *h, sni)
		}
		if h == nil && contacts.Load() != before {
			t.Fatalf("the CA was asked for %q, which the policy did not allow", sni)
		}
	})
}

// FuzzDevCertificate asks the dev CA for certificates for the fuzzer's
// server names: one it issues is for the name asked (lower case, without a
// trailing dot) and, for a host name or an IP address, verifies for it
// against the dev CA.
func FuzzDevCertificate(f *testing.F) {
	for _, s := range []string{"web.localhost", "WEB.localhost.", "127.0.0.1", "::1", "", "a b", "*.example.com", "xn--wb-gka.example.com", "é.example.com"} {
		f.Add(s)
	}
	dir := f.TempDir()
	if _, err := hostrouter.LoadOrCreateDevCA(dir); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, sni string) {
		// A CA per name asked: its cache of issued certificates grows with
		// every name.
		ca, err := hostrouter.LoadOrCreateDevCA(dir)
		if err != nil {
			t.Fatal(err)
		}
		c, err := ca.GetCertificate("fallback.localhost")(&tls.ClientHelloInfo{ServerName: sni})
		if err != nil {
			return
		}
		want := strings.ToLower(strings.TrimSuffix(sni, "."))
		if want == "" {
			want = "fallback.localhost"
		}
		leaf := c.Leaf
		if leaf == nil || leaf.Subject.CommonName != want {
			t.Fatalf("certificate for %q asked as %q", leaf.Subject.CommonName, sni)
		}
		if ip := net.ParseIP(want); ip != nil {
			if len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(ip) || len(leaf.DNSNames) != 0 {
				t.Fatalf("certificate for IP %q names %v %v", want, leaf.IPAddresses, leaf.DNSNames)
			}
		} else if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != want || len(leaf.IPAddresses) != 0 {
			t.Fatalf("certificate for %q names %v %v", want, leaf.DNSNames, leaf.IPAddresses)
		}
		if !hostname.MatchString(want) && net.ParseIP(want) == nil {
			return
		}
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: want, Roots: ca.Pool()}); err != nil {
			t.Fatalf("the certificate for %q does not verify: %v", want, err)
		}
	})
}

// hostname is a DNS name Verify can match (no wildcard, no empty label).
var hostname = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
