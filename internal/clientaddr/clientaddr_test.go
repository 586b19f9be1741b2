package clientaddr

import "testing"

func TestKey(t *testing.T) {
	for remote, want := range map[string]string{
		"203.0.113.7:443":                "203.0.113.7/32",
		"[::ffff:203.0.113.7]:1":         "203.0.113.7/32",
		"[2001:db8:1:2:3:4:5:6]:80":      "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff::1%eth0]:80": "2001:db8:1:2::/64",
		"2001:db8:1:2::9":                "2001:db8:1:2::/64",
		"not an address":                 "invalid Prefix",
	} {
		if got := Key(remote).String(); got != want {
			t.Errorf("Key(%q) = %s, want %s", remote, got, want)
		}
	}
}
