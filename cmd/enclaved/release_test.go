package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nbd-wtf/go-nostr"
)

// A maintainer signs a release with a key from the environment (never a
// flag); `release verify` reads it back; a bad key or PCR is refused.
func TestReleaseSignAndVerify(t *testing.T) {
	sk := nostr.GeneratePrivateKey()
	pk, _ := nostr.GetPublicKey(sk)
	pcr := strings.Repeat("ab", 48)
	args := []string{"release", "sign", "-version", "1.2.3", "-pcr0", pcr, "-pcr1", pcr, "-pcr2", pcr}
	var out, errb bytes.Buffer
	if err := run(context.Background(), args, &out, &errb, []string{signingKeyEnv + "=" + sk}); err != nil {
		t.Fatalf("sign: %v %s", err, errb.String())
	}
	var evt nostr.Event
	if err := json.Unmarshal(out.Bytes(), &evt); err != nil || evt.Kind != 63794 || evt.PubKey != pk || evt.Tags.FindWithValue("x", pcr) == nil {
		t.Fatalf("signed release %v %s", err, out.String())
	}
	file := filepath.Join(t.TempDir(), "release.json")
	os.WriteFile(file, out.Bytes(), 0o600)
	out.Reset()
	if err := run(context.Background(), []string{"release", "verify", file}, &out, &errb, nil); err != nil || !strings.Contains(out.String(), "v1.2.3") {
		t.Fatalf("verify: %v %s", err, out.String())
	}
	evt.Tags = append(evt.Tags, []string{"x", hex.EncodeToString(make([]byte, 48)), "PCR3"})
	b, _ := json.Marshal(evt)
	os.WriteFile(file, b, 0o600)
	if err := run(context.Background(), []string{"release", "verify", file}, &out, &errb, nil); err == nil {
		t.Error("a changed release verified")
	}
	if err := run(context.Background(), args, &out, &errb, []string{signingKeyEnv + "=nope"}); err == nil {
		t.Error("signed with a bad key")
	}
	if err := run(context.Background(), append(args[:len(args)-1], "abcd"), &out, &errb, []string{signingKeyEnv + "=" + sk}); err == nil {
		t.Error("signed a short PCR")
	}
}
