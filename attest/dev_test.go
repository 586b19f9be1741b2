package attest

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hf/nitrite"
)

// A dev document verifies with nitrite against the dev root, in the Nitro
// format, binding the given public key; against the AWS root, or after its
// leaf expired, or with one byte changed, it does not.
func TestDevDocumentVerifies(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	dir := t.TempDir()
	d, err := LoadOrCreateDev(dir, bytes.Repeat([]byte{7}, 48), func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	pub := bytes.Repeat([]byte{0xab}, 32)
	doc, err := d.Attest(context.Background(), pub, []byte("user"), []byte("nonce"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(d.Root())
	res, err := nitrite.Verify(doc, nitrite.VerifyOptions{Roots: pool, CurrentTime: now})
	if err != nil || !res.SignatureOK {
		t.Fatalf("verify: %v", err)
	}
	if !bytes.Equal(res.Document.PublicKey, pub) || string(res.Document.Nonce) != "nonce" || len(res.Document.PCRs) != PCRCount {
		t.Errorf("document %+v", res.Document)
	}
	if bytes.Equal(res.Document.PCRs[0], make([]byte, 48)) || !bytes.Equal(res.Document.PCRs[5], make([]byte, 48)) {
		t.Error("PCR0 must be derived, PCR5 zero")
	}
	if _, err := nitrite.Verify(doc, nitrite.VerifyOptions{CurrentTime: now}); err == nil {
		t.Error("a dev document verified against the AWS Nitro root")
	}
	if _, err := nitrite.Verify(doc, nitrite.VerifyOptions{Roots: pool, CurrentTime: now.Add(LeafValidity + time.Minute)}); err == nil {
		t.Error("verified after its leaf expired")
	}
	bad := bytes.Clone(doc)
	bad[len(bad)-1] ^= 1
	if _, err := nitrite.Verify(bad, nitrite.VerifyOptions{Roots: pool, CurrentTime: now}); err == nil {
		t.Error("a changed signature verified")
	}

	// The root is kept: reloading gives the same one.
	again, err := LoadOrCreateDev(dir, bytes.Repeat([]byte{7}, 48), func() time.Time { return now })
	if err != nil || !again.Root().Equal(d.Root()) {
		t.Fatalf("reload: %v", err)
	}
	if fi, err := os.Stat(dir + "/dev-root.key"); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("root key mode %v %v", fi.Mode(), err)
	}
}

// The real debug-enclave document: its chain verifies against the AWS root
// at its own time; its PCR0/1/2 are zero, as a debug enclave reports them
// (PCR4, the instance id, is not).
func TestRealNitroDocument(t *testing.T) {
	b64, err := os.ReadFile("testdata/debug-enclave-2022.b64")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b64)))
	if err != nil {
		t.Fatal(err)
	}
	res, err := nitrite.Verify(doc, nitrite.VerifyOptions{CurrentTime: time.Unix(1658860752, 0)})
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []uint{0, 1, 2} {
		if p := res.Document.PCRs[i]; len(p) != 48 || !bytes.Equal(p, make([]byte, 48)) {
			t.Errorf("PCR%d %x, want 48 zero bytes", i, p)
		}
	}
	if _, err := nitrite.Verify(doc, nitrite.VerifyOptions{CurrentTime: time.Now()}); err == nil {
		t.Error("the 2022 document verified today")
	}
}
