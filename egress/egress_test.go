package egress_test

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/enclaved/enclaved/egress"
)

func TestAllowed(t *testing.T) {
	pat := []string{"relay.example.com:443", "lnd.internal:*", "*.registry.io:443"}
	for addr, want := range map[string]bool{
		"relay.example.com:443": true, "RELAY.example.com.:443": true, "relay.example.com:80": false,
		"lnd.internal:10009": true, "a.registry.io:443": true, "registry.io:443": false, "evilregistry.io:443": false,
		"x.a.registry.io:443": true, "example.com:443": false, "garbage": false, ":443": false,
	} {
		if got := egress.Allowed(pat, addr); got != want {
			t.Errorf("%s: %v, want %v", addr, got, want)
		}
	}
}

func TestPlan(t *testing.T) {
	p, err := egress.NewPlan([]string{"api.example.com", "API.example.com:8443", "relay.damus.io:443"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(p.ExtraHosts(), " "), "api.example.com:198.18.0.1 relay.damus.io:198.18.0.2"; got != want {
		t.Errorf("ExtraHosts = %q, want %q", got, want)
	}
	if got, want := strings.Join(p.Allowed(), " "), "api.example.com:443 api.example.com:8443 relay.damus.io:443"; got != want {
		t.Errorf("Allowed = %q, want %q", got, want)
	}
	for dst, want := range map[string]string{
		"198.18.0.1:443":  "api.example.com:443",
		"198.18.0.1:8443": "api.example.com:8443",
		"198.18.0.2:443":  "relay.damus.io:443",
		"198.18.0.1:80":   "error: not allowed (port 80)",
		"198.18.0.3:443":  "error: not a host this container asked for",
		"1.1.1.1:443":     "error: not a host this container asked for",
	} {
		got, err := p.Destination(netip.MustParseAddrPort(dst))
		if err != nil {
			got = "error: " + err.Error()
		}
		if !strings.HasSuffix(got, strings.TrimPrefix(want, "error: ")) || strings.HasPrefix(want, "error: ") != (err != nil) {
			t.Errorf("Destination(%s) = %q, want %q", dst, got, want)
		}
	}
	empty, _ := egress.NewPlan(nil)
	if _, err := empty.Destination(netip.MustParseAddrPort("198.18.0.1:443")); err == nil {
		t.Error("an empty plan allows a destination")
	}
	for _, bad := range []string{"1.2.3.4", "1.2.3.4:443", "localhost", "a..b", "-a.com", "x.com:0", "x.com:99999", "x.com:http", "[::1]:443", "ex ample.com", strings.Repeat("a", 300) + ".com"} {
		if _, err := egress.NewPlan([]string{bad}); err == nil {
			t.Errorf("NewPlan(%q) accepted", bad)
		}
	}
	many := make([]string, egress.MaxHosts+1)
	for i := range many {
		many[i] = "h" + strings.Repeat("x", i) + ".example.com"
	}
	if _, err := egress.NewPlan(many); err == nil {
		t.Errorf("%d hosts accepted", len(many))
	}
}

// Renters' egress requests are hostile input: NewPlan never panics, and
// whatever it accepts maps each host's address back to that host only.
func FuzzNewPlan(f *testing.F) {
	for _, s := range []string{"api.example.com", "a.b:8443,c.d", "1.2.3.4:443", "[::1]:443", "x.com:0", "ünï.com", "a..b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := egress.NewPlan(strings.Split(s, ","))
		if err != nil {
			return
		}
		for _, eh := range p.ExtraHosts() {
			host, addr, _ := strings.Cut(eh, ":")
			for _, a := range p.Allowed() {
				h, port, _ := net.SplitHostPort(a)
				if h != host {
					continue
				}
				dst := netip.MustParseAddrPort(addr + ":" + port)
				if got, err := p.Destination(dst); err != nil || got != a {
					t.Fatalf("%q: %s maps to %q, %v; want %q", s, dst, got, err, a)
				}
			}
		}
	})
}
