// Package logging builds enclaved's slog loggers.
//
// Enclave logs are handed to the untrusted parent, so every logger built here
// redacts attributes that could carry a secret, by name (key, macaroon,
// preimage, content, ...) and by value (nsec1..., long hex strings under a
// secret-sounding name). Redaction is a safety net: code must still never pass
// a secret to a logger. It is used on both sides of the trust boundary.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"unicode/utf8"
)

// Redacted replaces a secret attribute value.
const Redacted = "[redacted]"

// secretNames are attribute names (or name suffixes) whose values are never
// logged. "content" covers decrypted DM bodies.
var secretNames = []string{
	"seckey", "secret", "privkey", "private_key", "privatekey", "nsec",
	"macaroon", "preimage", "password", "passphrase", "token", "mnemonic",
	"seed", "plaintext", "content", "cookie", "authorization",
}

// New returns a logger writing to w at level ("debug", "info", "warn",
// "error") in format ("text" or "json").
func New(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lv, ReplaceAttr: redact}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("log format %q: want text or json", format)
	}
}

func redact(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindGroup {
		return a
	}
	if IsSecretName(a.Key) {
		return slog.String(a.Key, Redacted)
	}
	if s, ok := a.Value.Resolve().Any().(string); ok && strings.Contains(s, "nsec1") {
		return slog.String(a.Key, Redacted)
	}
	if err, ok := a.Value.Resolve().Any().(error); ok && strings.Contains(err.Error(), "nsec1") {
		return slog.String(a.Key, Redacted)
	}
	switch v := a.Value.Resolve().Any().(type) {
	case string:
		if len(v) > MaxValue {
			return slog.String(a.Key, clip(v))
		}
	case error:
		if s := v.Error(); len(s) > MaxValue {
			return slog.String(a.Key, clip(s))
		}
	case fmt.Stringer:
		if s, ok := stringOf(v); ok && len(s) > MaxValue {
			return slog.String(a.Key, clip(s))
		}
	}
	return a
}

// MaxValue bounds one attribute's text: much of what is logged (image
// references, relay URLs, names, registries' errors) comes from strangers.
// Both handlers quote what they print, so no control character or line
// break reaches the log as such.
const MaxValue = 512

// stringOf is v.String(), or false if it panics (a nil pointer whose
// String has a value receiver): the handler prints it as fmt would.
func stringOf(v fmt.Stringer) (s string, ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	return v.String(), true
}

// clip cuts s to MaxValue bytes (on a rune boundary) and says how long it was.
func clip(s string) string {
	n := MaxValue
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return fmt.Sprintf("%s…[%d bytes]", s[:n], len(s))
}

// IsSecretName reports whether an attribute named name is redacted.
func IsSecretName(name string) bool {
	n := strings.ToLower(name)
	for _, s := range secretNames {
		if strings.Contains(n, s) {
			return true
		}
	}
	return false
}
