package logging

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestSecretsNeverReachTheLog(t *testing.T) {
	const nsec = "nsec1vl029mgpspedva04g90vltkh6fvh240zqtv9k0t9af8935ke9laqsnlfe5"
	const hexKey = "67dea2ed018072d675f5415ecfaed7d2597555e202d85b3d65ea4e58d2d92ffa"
	for _, format := range []string{"text", "json"} {
		var buf bytes.Buffer
		log, err := New(&buf, "debug", format)
		if err != nil {
			t.Fatal(err)
		}
		log.Info("start",
			"seckey", hexKey, "macaroon", "0201036c6e64", "preimage", hexKey,
			"content", "hello, this DM is private", "note", "key is "+nsec,
			"err", errors.New("bad key "+nsec),
			"pubkey", "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798")
		out := buf.String()
		for _, secret := range []string{hexKey, "0201036c6e64", "private", nsec} {
			if strings.Contains(out, secret) {
				t.Errorf("%s log leaks %q: %s", format, secret, out)
			}
		}
		if !strings.Contains(out, "79be667ef9dcbbac") {
			t.Errorf("%s log dropped a public key, which must stay readable: %s", format, out)
		}
	}
}

func TestBadLevelOrFormat(t *testing.T) {
	if _, err := New(&bytes.Buffer{}, "loud", "text"); err == nil {
		t.Error("level loud accepted")
	}
	if _, err := New(&bytes.Buffer{}, "info", "xml"); err == nil {
		t.Error("format xml accepted")
	}
}

// What strangers control (an image reference, a relay URL, a registry's
// error) is logged bounded and quoted: no forged log line, no megabyte.
func TestStrangersTextIsBoundedAndQuoted(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		var buf bytes.Buffer
		log, err := New(&buf, "debug", format)
		if err != nil {
			t.Fatal(err)
		}
		long := strings.Repeat("é", 100_000)
		log.Warn("pull failed", "image", "evil\nlevel=ERROR msg=\"forged\"", "relay", long, "err", errors.New(long))
		out := buf.String()
		if strings.Count(out, "\n") != 1 {
			t.Errorf("%s: one record became %d lines:\n%s", format, strings.Count(out, "\n"), out)
		}
		if len(out) > 3*MaxValue+200 || !strings.Contains(out, "…[200000 bytes]") {
			t.Errorf("%s: a 200 kB value logged as %d bytes", format, len(out))
		}
		if !utf8.ValidString(out) {
			t.Errorf("%s: a value was cut inside a character", format)
		}
	}
}
