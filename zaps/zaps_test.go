package zaps

import (
	"strings"
	"testing"
)

func TestParseAmount(t *testing.T) {
	for in, want := range map[string]string{
		"":                     "missing",
		"abc":                  "not a whole number",
		"999":                  "outside",
		"100000000001000":      "outside",
		"1500":                 "not a whole number of sats",
		"-1000":                "outside",
		"99999999999999999999": "not a whole number",
	} {
		if _, err := ParseAmount(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseAmount(%q) = %v, want an error containing %q", in, err, want)
		}
	}
	if n, err := ParseAmount("21000"); err != nil || n != 21000 {
		t.Errorf("ParseAmount(21000) = %d, %v", n, err)
	}
}

func FuzzParseAmount(f *testing.F) {
	for _, s := range []string{"1000", "", "-5", "1e9", "0x10", "100000000000000"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseAmount(s)
		if err != nil {
			if n != 0 || len(err.Error()) > 200 {
				t.Fatalf("error %v with amount %d", err, n)
			}
			return
		}
		if n < MinSendableMsat || n > MaxSendableMsat || n%1000 != 0 {
			t.Fatalf("accepted %q as %d", s, n)
		}
	})
}
