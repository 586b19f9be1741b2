// Package egress is the policy of what the enclave and renters'
// containers may reach: allowlist patterns ("host:port", "host:*",
// "*.domain:port", "*.domain:*") and the matching of an address against
// them, and each container's plan (the hosts it asked for, within the
// operator's patterns, with the synthetic addresses its /etc/hosts names
// them by). Pure rules, no I/O: tunnel, egressproxy, deployer, the
// instance and config all use it. It runs in the enclave.
package egress

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Allowed says whether addr (host:port) matches one of the patterns.
func Allowed(patterns []string, addr string) bool {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || port == "" {
		return false
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, p := range patterns {
		ph, pp, err := net.SplitHostPort(p)
		if err != nil || (pp != "*" && pp != port) {
			continue
		}
		ph = strings.ToLower(ph)
		if ph == host || (strings.HasPrefix(ph, "*.") && len(host) > len(ph)-1 && strings.HasSuffix(host, ph[1:])) {
			return true
		}
	}
	return false
}

// ValidPattern says whether p is an allowlist pattern: host:port,
// host:*, *.domain:port or *.domain:*.
func ValidPattern(p string) bool {
	h, port, err := net.SplitHostPort(p)
	return err == nil && h != "" && port != ""
}

// MaxHosts bounds the hosts one container may ask for.
const MaxHosts = 16

// syntheticBase is the first address handed out (RFC 2544's benchmarking
// range).
var syntheticBase = netip.MustParseAddr("198.18.0.1")

// Plan is one container's egress: the host:port pairs it may reach and the
// synthetic address its /etc/hosts gives each host.
type Plan struct {
	allow map[string]bool       // "host:port"
	hosts map[netip.Addr]string // synthetic address → host
	names []string              // "host:address" in order, for ExtraHosts
}

// NewPlan checks the requested destinations ("host:port" or "host",
// meaning port 443) and gives each host its address. An empty request is
// the default: nothing is reachable.
func NewPlan(requested []string) (Plan, error) {
	p := Plan{allow: map[string]bool{}, hosts: map[netip.Addr]string{}}
	addrOf := map[string]netip.Addr{}
	next := syntheticBase
	for _, r := range requested {
		host, port, err := SplitDestination(r)
		if err != nil {
			return Plan{}, err
		}
		if _, ok := addrOf[host]; !ok {
			if len(p.names) == MaxHosts {
				return Plan{}, fmt.Errorf("egress: at most %d hosts", MaxHosts)
			}
			addrOf[host] = next
			p.hosts[next] = host
			p.names = append(p.names, host+":"+next.String())
			next = next.Next()
		}
		p.allow[net.JoinHostPort(host, strconv.Itoa(port))] = true
	}
	return p, nil
}

// SplitDestination parses "host:port" or "host" (port 443). The host must
// be a DNS name: an IP address would bypass the naming the policy rests on.
func SplitDestination(s string) (string, int, error) {
	host, ps, err := net.SplitHostPort(s)
	if err != nil {
		host, ps = s, "443"
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	port, perr := strconv.Atoi(ps)
	if perr != nil || port < 1 || port > 65535 {
		return "", 0, fmt.Errorf("egress %q: bad port", clip(s))
	}
	if !isDNSName(host) {
		return "", 0, fmt.Errorf("egress %q: want a host name such as api.example.com", clip(s))
	}
	return host, port, nil
}

func isDNSName(h string) bool {
	if len(h) == 0 || len(h) > 253 || !strings.Contains(h, ".") {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	// The last label of a name is never all digits (that is an address).
	last := h[strings.LastIndexByte(h, '.')+1:]
	return strings.Trim(last, "0123456789") != ""
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// ExtraHosts is the container's /etc/hosts additions, "host:address", in
// the form Docker's ExtraHosts takes.
func (p Plan) ExtraHosts() []string {
	return append([]string(nil), p.names...)
}

// Allowed lists the allowed destinations, "host:port".
func (p Plan) Allowed() []string {
	out := make([]string, 0, len(p.allow))
	for a := range p.allow {
		out = append(out, a)
	}
	slices.Sort(out)
	return out
}

// Destination maps an original destination back to the host:port the
// container meant, or says why it is refused.
func (p Plan) Destination(dst netip.AddrPort) (string, error) {
	host, ok := p.hosts[dst.Addr().Unmap()]
	if !ok {
		return "", fmt.Errorf("%s is not a host this container asked for", dst.Addr())
	}
	addr := net.JoinHostPort(host, strconv.Itoa(int(dst.Port())))
	if !p.allow[addr] {
		return "", fmt.Errorf("%s is not allowed (port %d)", host, dst.Port())
	}
	return addr, nil
}
