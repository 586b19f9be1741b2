package docker

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"strings"

	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/errdefs"

	"github.com/enclaved/enclaved/deployer"
)

// Each container's own network gets a subnet chosen here, not by the
// engine: an engine with default address pools hands out only about thirty
// networks (172.17–31.0.0/16, then 192.168.0.0/16 in /20s), which would cap
// an instance at about thirty containers whatever its size. A /29 of a
// configured range (instance.container_subnets) needs no daemon
// configuration, so dev hosts and CI run containers as the enclave does.
//
// A /29 holds the network and broadcast addresses, the gateway (the bridge's
// address, where the container's egress proxy listens), the container, and
// four spare. The first subnet tried is the name's hash in the range, then
// the next ones in turn (linear probing): an engine that says a subnet
// overlaps another network's (of this instance, another instance, or
// anything else on the host) has every network's subnets noted and the next
// free one tried, at most maxSubnetTries times.

// SubnetBits is the prefix length of each container network's subnet.
const SubnetBits = 29

// DefaultSubnets is the range container networks' subnets come from unless
// configured: private, outside Docker's default pools, 32,768 /29s.
var DefaultSubnets = netip.MustParsePrefix("10.200.0.0/14")

// maxSubnetTries bounds the subnets one network creation asks the engine for.
const maxSubnetTries = 32

// Option configures a Runtime.
type Option func(*Runtime)

// Subnets sets the range container networks' subnets come from: an IPv4
// prefix no longer than /29 (New refuses others).
func Subnets(p netip.Prefix) Option { return func(r *Runtime) { r.subnets = p } }

// pool numbers the /29s of a range from 0.
type pool struct {
	base uint32 // the range's first address
	n    int    // how many /29s it holds
}

func newPool(p netip.Prefix) (pool, error) {
	if !p.IsValid() || !p.Addr().Is4() || p.Bits() > SubnetBits || p.Bits() < 8 {
		return pool{}, fmt.Errorf("container subnets %s: want an IPv4 range from /8 to /%d", p, SubnetBits)
	}
	p = p.Masked()
	return pool{base: u32(p.Addr()), n: 1 << (SubnetBits - p.Bits())}, nil
}

func u32(a netip.Addr) uint32 { b := a.As4(); return binary.BigEndian.Uint32(b[:]) }

// subnet is the i-th /29.
func (p pool) subnet(i int) netip.Prefix {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], p.base+uint32(i)<<(32-SubnetBits))
	return netip.PrefixFrom(netip.AddrFrom4(b), SubnetBits)
}

// first is the first /29 tried for the network called name.
func (p pool) first(name string) int {
	h := fnv.New32a()
	h.Write([]byte(name))
	return int(h.Sum32() % uint32(p.n))
}

// overlapping returns the /29s q overlaps, as [lo, hi).
func (p pool) overlapping(q netip.Prefix) (lo, hi int) {
	if !q.IsValid() || !q.Addr().Is4() {
		return 0, 0
	}
	q = q.Masked()
	first := uint64(u32(q.Addr()))
	last := first + 1<<(32-q.Bits()) - 1
	start, end := uint64(p.base), uint64(p.base)+uint64(p.n)<<(32-SubnetBits)-1
	first, last = max(first, start), min(last, end)
	if first > last {
		return 0, 0
	}
	return int((first - start) >> (32 - SubnetBits)), int((last-start)>>(32-SubnetBits)) + 1
}

// next is the first /29 from i on (wrapping) not taken; false if all are.
func (p pool) next(i int, taken []bool) (int, bool) {
	for k := range p.n {
		j := (i + k) % p.n
		if taken == nil || !taken[j] {
			return j, true
		}
	}
	return 0, false
}

// createNetwork creates the bridge network name on a free /29 of the range.
func (r *Runtime) createNetwork(ctx context.Context, name string, labels map[string]string) error {
	i := r.pool.first(name)
	var taken []bool // made at the first clash
	for range maxSubnetTries {
		j, ok := r.pool.next(i, taken)
		if !ok {
			break
		}
		subnet := r.pool.subnet(j)
		_, err := r.c.NetworkCreate(ctx, name, network.CreateOptions{Driver: "bridge", Labels: labels,
			// The gateway named, or engines before 23.0 would not say it.
			IPAM: &network.IPAM{Driver: "default", Config: []network.IPAMConfig{{Subnet: subnet.String(), Gateway: subnet.Addr().Next().String()}}}})
		if err == nil || errdefs.IsConflict(err) { // a network of that name exists: it is used
			return nil
		}
		if !clash(err) {
			return err
		}
		if taken == nil {
			taken = make([]bool, r.pool.n)
		}
		taken[j] = true
		if err := r.noteTaken(ctx, taken); err != nil {
			return err
		}
		i = j + 1
	}
	return fmt.Errorf("no free /%d left in %s after %d tries (instance.container_subnets)", SubnetBits, r.subnets, maxSubnetTries)
}

// clash says whether the engine refused a subnet because another network
// holds it (its IPAM's "Pool overlaps with other one on this address
// space", or the bridge driver's "conflicts with network").
func clash(err error) bool {
	msg := strings.ToLower(err.Error())
	return strings.Contains(msg, "overlap") || strings.Contains(msg, "conflicts with network")
}

// noteTaken marks the /29s that the engine's networks, whoever made them,
// hold.
func (r *Runtime) noteTaken(ctx context.Context, taken []bool) error {
	list, err := r.c.NetworkList(ctx, network.ListOptions{})
	if err != nil {
		return fmt.Errorf("listing networks: %w", err)
	}
	for _, n := range list {
		for _, c := range n.IPAM.Config {
			q, err := netip.ParsePrefix(c.Subnet)
			if err != nil {
				continue
			}
			lo, hi := r.pool.overlapping(q)
			for k := lo; k < hi; k++ {
				taken[k] = true
			}
		}
	}
	return nil
}

// networks lists the ids of the networks called exactly name.
func (r *Runtime) networks(ctx context.Context, name string) ([]string, error) {
	list, err := r.c.NetworkList(ctx, network.ListOptions{Filters: filters.NewArgs(filters.Arg("name", name))})
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, n := range list {
		if n.Name == name { // the filter matches substrings
			ids = append(ids, n.ID)
		}
	}
	return ids, nil
}

// Networks lists the networks carrying the enclaved.instance label, of
// every instance on this engine.
func (r *Runtime) Networks(ctx context.Context) ([]deployer.NetworkInfo, error) {
	list, err := r.c.NetworkList(ctx, network.ListOptions{Filters: filters.NewArgs(filters.Arg("label", deployer.LabelInstance))})
	if err != nil {
		return nil, fmt.Errorf("listing networks: %w", err)
	}
	out := make([]deployer.NetworkInfo, 0, len(list))
	for _, n := range list {
		out = append(out, deployer.NetworkInfo{ID: n.ID, Name: n.Name, Labels: n.Labels})
	}
	return out, nil
}

// RemoveNetwork removes every network called exactly name (the engine's
// duplicate check on names is best-effort). None is not an error.
func (r *Runtime) RemoveNetwork(ctx context.Context, name string) error {
	ids, err := r.networks(ctx, name)
	if err != nil {
		return fmt.Errorf("remove network %s: %w", name, err)
	}
	var errs []error
	for _, id := range ids {
		if err := r.c.NetworkRemove(ctx, id); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("remove network %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}
