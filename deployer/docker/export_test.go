package docker

import "net/netip"

// Candidates are the first k subnets r tries, in order, for the network
// called name when none is taken.
func Candidates(r *Runtime, name string, k int) []netip.Prefix {
	var out []netip.Prefix
	for i := range min(k, r.pool.n) {
		out = append(out, r.pool.subnet((r.pool.first(name)+i)%r.pool.n))
	}
	return out
}
