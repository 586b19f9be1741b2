package enclave_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/enclaved/enclaved/egress"

	"github.com/enclaved/enclaved/egressproxy"
	"github.com/enclaved/enclaved/enclave"
	"github.com/enclaved/enclaved/hostrouter"
	"github.com/enclaved/enclaved/internal/testenv"
	"github.com/enclaved/enclaved/tunnel"
)

// A renter's container serving HTTP and reaching out, as in the enclave:
// TLS terminates in the instance (dev CA), https://web.<host> reaches the
// container's port, and the container's connections go through its egress
// proxy with real iptables rules on its bridge: the host it asked for is
// reached, an address it did not ask for is refused and logged. The
// renter's egress request is held to the operator's policy.
func TestContainerHTTPAndEgress(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for iptables")
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Skip("needs iptables")
	}
	relay := testenv.Relay(t)
	imgs := testenv.Images(t)
	dir := t.TempDir()

	// The outside host: an echo server, which api.example.com names here
	// (as DNS would at the parent).
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	var logs testenv.SyncBuffer
	policy := []string{"api.example.com:443", "*.example.org:443"}
	m := &egressproxy.Manager{Log: slog.New(slog.NewTextHandler(&logs, nil)), Firewall: &egressproxy.Firewall{},
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if !egress.Allowed(policy, addr) {
				return nil, &tunnel.DeniedError{Addr: addr}
			}
			var d net.Dialer
			return d.DialContext(ctx, network, echo.Addr().String())
		}}
	ca, err := hostrouter.LoadOrCreateDevCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	in := startInstanceWith(t, dir, []string{relay.URL}, func(p *enclave.Parts) {
		p.Confiner = m
		p.HTTPListener = l
		p.TLS = hostrouter.ServerConfig(ca.GetCertificate("enclaved.test"), false)
	}, "instance.container_egress="+strings.Join(policy, ","), "http.public_url=https://enclaved.test:"+port)

	// Every name under enclaved.test reaches the instance's listener; the
	// client checks the certificate against the dev CA only.
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: ca.Pool()},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}}}
	get := func(u string) (int, string) {
		t.Helper()
		resp, err := client.Get(u)
		if err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	c := testenv.NewClient(t, relay.URL)
	self := in.key.PublicKey()
	c.Send(t, "nip17", self, "deploy "+imgs.Hello.Ref+" name=evil egress=evil.example.com")
	c.Await(t, self, "egress to evil.example.com:443 is outside this instance's policy")
	in.deploy(t, c, "deploy "+imgs.Hello.Ref+" name=web port=8080 egress=api.example.com", "web")
	rec := in.container(t, "web")
	defer in.in.Deployer.Remove(context.Background(), rec.ID, "test over")
	testenv.WaitLog(t, testenv.Docker(t), rec.DockerID, "listening :8080")

	// The API on the public host, the container on its own name.
	var info map[string]any
	code, body := get("https://enclaved.test:" + port + "/api/v1/instance")
	if code != 200 || json.Unmarshal([]byte(body), &info) != nil {
		t.Fatalf("API over TLS: %d %q", code, body)
	}
	if code, body := get("https://web.enclaved.test:" + port + "/"); code != 200 || !strings.Contains(body, "hello from enclaved") {
		t.Errorf("container over TLS: %d %q", code, body)
	}
	if code, body := get("https://nosuch.enclaved.test:" + port + "/"); code != 404 || !strings.Contains(body, "no running container called nosuch") {
		t.Errorf("unknown container: %d %q", code, body)
	}

	// Egress from inside the container.
	for _, tc := range []struct{ addr, want, log string }{
		{"api.example.com:443", "reply: ping", `msg="container egress" container=enclaved-` + rec.ID + " to=api.example.com:443"},
		{"api.example.com:80", "reply: ", "api.example.com is not allowed (port 80)"},
		{"93.184.216.34:443", "reply: ", "93.184.216.34 is not a host this container asked for"},
	} {
		if _, body := get("https://web.enclaved.test:" + port + "/fetch?addr=" + tc.addr); body != tc.want {
			t.Errorf("fetch %s from the container: %q, want %q", tc.addr, body, tc.want)
		}
		if !strings.Contains(logs.String(), tc.log) {
			t.Errorf("fetch %s: the log has no %q:\n%s", tc.addr, tc.log, logs.String())
		}
	}

	// Its rules go with it.
	bridge := m.Port("enclaved-" + rec.ID)
	if bridge == 0 {
		t.Fatal("no proxy for the container")
	}
	if err := in.in.Deployer.Remove(context.Background(), rec.ID, "test over"); err != nil {
		t.Fatal(err)
	}
	if m.Port("enclaved-"+rec.ID) != 0 {
		t.Error("the proxy outlived its container")
	}
	rules, _ := exec.Command("iptables-save").CombinedOutput()
	if bytes.Contains(rules, []byte("--to-ports "+strconv.Itoa(bridge))) {
		t.Errorf("rules left after removal:\n%s", rules)
	}
}
