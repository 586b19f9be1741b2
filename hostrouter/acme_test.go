package hostrouter_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/enclaved/enclaved/hostrouter"
	"github.com/enclaved/enclaved/internal/proc"
)

// pebbleVersion is Let's Encrypt's ACME test server, built from the module
// proxy into the tools cache.
const pebbleVersion = "v2.7.0"

// pebbleTools builds pebble and its mock DNS server once.
func pebbleTools(t *testing.T) (bin, certs string) {
	t.Helper()
	cache := os.Getenv("ENCLAVED_TOOLS")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "enclaved", "tools")
	}
	bin = filepath.Join(cache, "pebble-"+pebbleVersion)
	for _, cmd := range []string{"pebble", "pebble-challtestsrv"} {
		if _, err := os.Stat(filepath.Join(bin, cmd)); err == nil {
			continue
		}
		c := exec.Command("go", "install", "github.com/letsencrypt/pebble/v2/cmd/"+cmd+"@"+pebbleVersion)
		c.Env = append(os.Environ(), "GOBIN="+bin, "GOFLAGS=")
		if out, err := c.CombinedOutput(); err != nil {
			t.Skipf("cannot build %s %s: %v\n%s", cmd, pebbleVersion, err, out)
		}
	}
	out, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		t.Fatal(err)
	}
	certs = filepath.Join(strings.TrimSpace(string(out)), "github.com/letsencrypt/pebble/v2@"+pebbleVersion, "test/certs")
	return bin, certs
}

func freePort(t *testing.T) int {
	t.Helper()
	p, err := proc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// ACME against a real ACME server: pebble, whose mock DNS points every
// name at 127.0.0.1, validates by TLS-ALPN-01 on the instance's own
// listener (the one the parent forwards), and issues certificates for the
// names the instance allows and for no other.
func TestACMEWithPebble(t *testing.T) {
	bin, certs := pebbleTools(t)
	dir := t.TempDir()
	tlsPort, dnsPort := freePort(t), freePort(t)
	acmePort, mgmtPort := freePort(t), freePort(t)
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":           "127.0.0.1:" + strconv.Itoa(acmePort),
		"managementListenAddress": "127.0.0.1:" + strconv.Itoa(mgmtPort),
		"certificate":             filepath.Join(certs, "localhost/cert.pem"),
		"privateKey":              filepath.Join(certs, "localhost/key.pem"),
		"httpPort":                freePort(t),
		"tlsPort":                 tlsPort,
	}}
	b, _ := json.Marshal(cfg)
	os.WriteFile(filepath.Join(dir, "pebble.json"), b, 0o600)

	dns, err := proc.Start("challtestsrv", dir, filepath.Join(bin, "pebble-challtestsrv"),
		"-defaultIPv4", "127.0.0.1", "-defaultIPv6", "", "-dns01", "127.0.0.1:"+strconv.Itoa(dnsPort),
		"-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "", "-management", "127.0.0.1:"+strconv.Itoa(freePort(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Kill()
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")
	pebble, err := proc.Start("pebble", dir, filepath.Join(bin, "pebble"), "-config", filepath.Join(dir, "pebble.json"),
		"-dnsserver", "127.0.0.1:"+strconv.Itoa(dnsPort))
	if err != nil {
		t.Fatal(err)
	}
	defer pebble.Kill()

	minica, err := os.ReadFile(filepath.Join(certs, "pebble.minica.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pebbleCA := x509.NewCertPool()
	pebbleCA.AppendCertsFromPEM(minica)
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pebbleCA}}}
	directory := fmt.Sprintf("https://127.0.0.1:%d/dir", acmePort)
	ctx := context.Background()
	if err := proc.WaitFor(ctx, "pebble", time.Minute, func(ctx context.Context) (bool, error) {
		resp, err := hc.Get(directory)
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == 200, nil
	}, pebble, dns); err != nil {
		t.Fatal(err)
	}

	// The instance's listener: what the parent forwards port 443 to.
	m := hostrouter.ACME{Directory: directory, CacheDir: filepath.Join(dir, "acme"), HTTPClient: hc,
		Allowed: func(_ context.Context, host string) bool {
			return host == "enclaved.test" || host == "web.enclaved.test"
		}}.Manager()
	l, err := tls.Listen("tcp", "127.0.0.1:"+strconv.Itoa(tlsPort), hostrouter.ServerConfig(m.GetCertificate, true))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ErrorLog: log.New(io.Discard, "", 0), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok "+r.Host) })}
	go srv.Serve(l)
	defer srv.Close()

	// Pebble's issuing root, which a client of this test CA trusts.
	resp, err := hc.Get(fmt.Sprintf("https://127.0.0.1:%d/roots/0", mgmtPort))
	if err != nil {
		t.Fatal(err)
	}
	rootPEM, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(rootPEM) {
		t.Fatalf("pebble's root: %q", rootPEM)
	}
	get := func(name string) (string, error) {
		c := &http.Client{Timeout: 90 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: name},
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, l.Addr().String())
			}}}
		resp, err := c.Get("https://" + name + "/")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b), nil
	}
	for _, name := range []string{"enclaved.test", "web.enclaved.test"} {
		if body, err := get(name); err != nil || body != "ok "+name {
			t.Errorf("%s over an ACME certificate: %q, %v\n%s", name, body, err, pebble.Tail(20))
		}
	}
	if _, err := get("other.test"); err == nil {
		t.Error("a certificate was obtained for a name the instance does not serve")
	}
	// The account key and the certificates are kept in the cache (the
	// enclave's RAM disk; issue 7 backs it up).
	if entries, _ := os.ReadDir(filepath.Join(dir, "acme")); len(entries) < 3 {
		t.Errorf("the ACME cache holds %d entries, want the account key and 2 certificates", len(entries))
	}
}
