package bench

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// row is one figure of the table. Floor is what no instance can beat,
// measured in the same run (0: none); Ratio is Measured / Floor.
type row struct {
	ID      string // P1 … P8
	Measure string
	Goal    string
	Unit    string // ms, /s, MB, containers
	Floor   float64
	// FloorNote says what the floor is.
	FloorNote string
	Measured  float64
	// Pass says whether the goal holds; Checked is false when no goal
	// applies (the row informs).
	Pass, Checked bool
}

func (r row) ratio() string {
	if r.Floor <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", r.Measured/r.Floor)
}

func (r row) verdict() string {
	switch {
	case !r.Checked:
		return "–"
	case r.Pass:
		return "pass"
	}
	return "FAIL"
}

func num(v float64, unit string) string {
	switch {
	case unit == "containers" || unit == "/s" && v >= 100:
		return fmt.Sprintf("%.0f %s", v, unit)
	case v >= 100:
		return fmt.Sprintf("%.0f %s", v, unit)
	case v >= 10:
		return fmt.Sprintf("%.1f %s", v, unit)
	}
	return fmt.Sprintf("%.2f %s", v, unit)
}

// markdown is the table of rows.
func markdown(rows []row) string {
	var sb strings.Builder
	sb.WriteString("| # | measure | goal | floor | measured | ratio | pass |\n|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		floor := "–"
		if r.Floor > 0 {
			floor = num(r.Floor, r.Unit)
			if r.FloorNote != "" {
				floor += " (" + r.FloorNote + ")"
			}
		}
		fmt.Fprintf(&sb, "| %s | %s | %s | %s | %s | %s | %s |\n", r.ID, r.Measure, r.Goal, floor, num(r.Measured, r.Unit), r.ratio(), r.verdict())
	}
	return sb.String()
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// median of ds (0 for none).
func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
