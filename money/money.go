// Package money is the arithmetic of renting: a container's price per hour,
// the exact charge for a stretch of running time, how much running time a
// balance still pays for, and how durations read to people. Integer
// millisatoshis and milliseconds throughout, never floats.
//
// It is pure (no I/O) and runs inside the enclave; billing charges with it
// and the container records report time left with it.
package money

import (
	"fmt"
	"math/bits"
	"strings"
	"time"
)

const msPerHour = 3_600_000

// Rate is a container's price in msat per hour.
func Rate(units, priceMsatPerUnitHour int64) int64 { return units * priceMsatPerUnitHour }

// ChargeFor returns floor(rate * runMs / 1 h) without overflow: what runMs
// of running time costs at rate msat per hour.
func ChargeFor(rate, runMs int64) int64 {
	if rate <= 0 || runMs <= 0 {
		return 0
	}
	hi, lo := bits.Mul64(uint64(rate), uint64(runMs))
	if hi >= msPerHour {
		return 1<<63 - 1 // beyond any balance
	}
	q, _ := bits.Div64(hi, lo, msPerHour)
	if q > 1<<63-1 {
		return 1<<63 - 1
	}
	return int64(q)
}

// RunMsFor returns the least running time whose charge reaches charged.
func RunMsFor(rate, charged int64) int64 {
	if rate <= 0 {
		return 1<<63 - 1
	}
	hi, lo := bits.Mul64(uint64(charged), msPerHour)
	q, r := bits.Div64(hi, lo, uint64(rate))
	if r > 0 {
		q++
	}
	return int64(q)
}

// TimeLeft is how much more running time the balance pays for: until the
// charges reach it exactly, which is also where metering stops a container.
func TimeLeft(rate, balance, charged, runMs int64) time.Duration {
	if rate <= 0 {
		return time.Duration(1<<63 - 1)
	}
	ms := RunMsFor(rate, charged+balance) - runMs
	if ms < 0 {
		ms = 0
	}
	return time.Duration(ms) * time.Millisecond
}

func Human(d time.Duration) string {
	if d < time.Minute {
		return fmt.Sprintf("%d s", int64(max(d, 0)/time.Second))
	}
	d = d.Round(time.Minute)
	days, h, m := int64(d/(24*time.Hour)), int64(d%(24*time.Hour)/time.Hour), int64(d%time.Hour/time.Minute)
	var parts []string
	if days == 1 {
		parts = append(parts, "1 day")
	} else if days > 1 {
		parts = append(parts, fmt.Sprintf("%d days", days))
	}
	if h > 0 {
		parts = append(parts, fmt.Sprintf("%d h", h))
	}
	if m > 0 && days == 0 {
		parts = append(parts, fmt.Sprintf("%d min", m))
	}
	if len(parts) == 0 {
		return "0 min"
	}
	return strings.Join(parts, " ")
}
