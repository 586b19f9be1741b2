// Package clientaddr says who a public client is, for limits per client:
// an IPv4 address, or an IPv6 /64 (what one subscriber usually holds). It
// runs in the enclave, on the remote addresses the parent forwards.
package clientaddr

import (
	"net"
	"net/netip"
)

// Key is the client a RemoteAddr ("host:port" or a bare address) belongs
// to; every unparsable address shares the zero key.
func Key(remote string) netip.Prefix {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Prefix{}
	}
	addr = addr.Unmap().WithZone("")
	if addr.Is4() {
		return netip.PrefixFrom(addr, 32)
	}
	p, _ := addr.Prefix(64)
	return p
}
