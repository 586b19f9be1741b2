package enclave

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKeyIsCreatedOnceAndKept(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys", "instance.key")
	k1, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	k2, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if k1.PublicKey() != k2.PublicKey() {
		t.Error("reloading the key file gave another key")
	}
	if !strings.HasPrefix(k1.Npub(), "npub1") || len(k1.PublicKey()) != 64 {
		t.Errorf("npub %q pubkey %q", k1.Npub(), k1.PublicKey())
	}
}

func TestKeyFileReadableByOthersIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "instance.key")
	if _, err := LoadOrCreateKey(path); err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, 0o644)
	_, err := LoadOrCreateKey(path)
	if err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable key: %v, want a refusal saying chmod 600", err)
	}
}

func TestBadKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "instance.key")
	os.WriteFile(path, []byte("not hex\n"), 0o600)
	_, err := LoadOrCreateKey(path)
	if err == nil || !strings.Contains(err.Error(), "64 hex characters") || !strings.Contains(err.Error(), path) {
		t.Fatalf("bad key file: %v", err)
	}
}

// The secret never shows in formatted output or logs.
func TestKeyNeverPrintsItsSecret(t *testing.T) {
	k, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "key", k)
	out := fmt.Sprintf("%v %+v %#v %s", k, k, k, k) + buf.String()
	if strings.Contains(out, k.sec) {
		t.Fatalf("secret leaked: %s", out)
	}
	if !strings.Contains(out, k.Npub()) {
		t.Errorf("npub missing: %s", out)
	}
}

func TestContainerKeyIsDerivedFromInstanceAndID(t *testing.T) {
	a, err := ParseKey("7f7ff03d123792d6ac594bfa67bf6d0c0ab55b6b1fdb6249303fe861f1ccba9a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	k1, k1again, k2 := a.ContainerKey("0011223344556677"), a.ContainerKey("0011223344556677"), a.ContainerKey("0011223344556678")
	if k1.PublicKey() != k1again.PublicKey() {
		t.Fatal("the same container id gave two keys")
	}
	if k1.PublicKey() == k2.PublicKey() || k1.PublicKey() == a.PublicKey() {
		t.Fatal("container keys collide with each other or with the instance key")
	}
	if b.ContainerKey("0011223344556677").PublicKey() == k1.PublicKey() {
		t.Fatal("two instances derived the same container key")
	}
	// Pinned: changing the derivation would orphan every container's
	// identity on restore.
	if got, want := k1.PublicKey(), "c2aa3e23f3941ffa438fe18923bb5529251c0c891f57dc7eaffaab971fc81260"; got != want {
		t.Fatalf("derivation changed: got %s, want %s", got, want)
	}
}
