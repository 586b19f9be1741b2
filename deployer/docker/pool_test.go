package docker

import (
	"net/netip"
	"testing"
)

// The range's /29s are numbered from its first address; a prefix marks the
// /29s it overlaps, clamped to the range; probing wraps around.
func TestPool(t *testing.T) {
	p, err := newPool(netip.MustParsePrefix("10.200.0.0/14"))
	if err != nil || p.n != 32768 {
		t.Fatalf("pool of a /14: %+v %v", p, err)
	}
	if got := p.subnet(0).String(); got != "10.200.0.0/29" {
		t.Errorf("subnet 0: %s", got)
	}
	if got := p.subnet(p.n - 1).String(); got != "10.203.255.248/29" {
		t.Errorf("last subnet: %s", got)
	}
	for q, want := range map[string][2]int{
		"10.200.0.8/29":     {1, 2},
		"10.200.0.9/32":     {1, 2},
		"10.200.1.0/24":     {32, 64},
		"10.0.0.0/8":        {0, 32768},
		"10.203.255.0/24":   {32736, 32768},
		"10.204.0.0/16":     {0, 0},
		"172.17.0.0/16":     {0, 0},
		"192.168.0.0/20":    {0, 0},
		"10.199.255.255/32": {0, 0},
	} {
		lo, hi := p.overlapping(netip.MustParsePrefix(q))
		if lo != want[0] || hi != want[1] {
			t.Errorf("%s overlaps [%d, %d), want [%d, %d)", q, lo, hi, want[0], want[1])
		}
	}
	small, _ := newPool(netip.MustParsePrefix("192.168.5.0/27"))
	taken := []bool{false, true, false, true}
	if j, ok := small.next(3, taken); !ok || j != 0 {
		t.Errorf("next from 3: %d %v, want 0 (wrapped)", j, ok)
	}
	if j, ok := small.next(1, taken); !ok || j != 2 {
		t.Errorf("next from 1: %d %v, want 2", j, ok)
	}
	if _, ok := small.next(0, []bool{true, true, true, true}); ok {
		t.Error("a full range has a free subnet")
	}
	for _, bad := range []string{"10.200.0.0/30", "fd00::/64", "10.0.0.0/7"} {
		if _, err := newPool(netip.MustParsePrefix(bad)); err == nil {
			t.Errorf("a pool of %s", bad)
		}
	}
}
