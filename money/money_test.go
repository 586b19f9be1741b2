package money

import "testing"

func TestChargeArithmetic(t *testing.T) {
	cases := []struct{ rate, ms, want int64 }{
		{1000, 3_600_000, 1000},
		{1000, 3_599_999, 999},
		{1, 1, 0},
		{0, 1 << 40, 0},
		{64 * 1_000_000_000, 100 * 365 * 24 * 3_600_000, 64 * 1_000_000_000 * 100 * 365 * 24}, // overflows int64 if done naively
	}
	for _, c := range cases {
		if got := ChargeFor(c.rate, c.ms); got != c.want {
			t.Errorf("ChargeFor(%d, %d) = %d, want %d", c.rate, c.ms, got, c.want)
		}
	}
	for _, rate := range []int64{1, 7, 1000, 3003, 1 << 33} {
		for _, charged := range []int64{0, 1, 999, 1 << 30} {
			ms := RunMsFor(rate, charged)
			if ChargeFor(rate, ms) < charged || (ms > 0 && ChargeFor(rate, ms-1) >= charged) {
				t.Errorf("RunMsFor(%d, %d) = %d is not the least time charging that much", rate, charged, ms)
			}
		}
	}
}
