package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hf/nitrite"
	"github.com/nbd-wtf/go-nostr"
	"github.com/nbd-wtf/go-nostr/nip19"

	"github.com/enclaved/enclaved/attest"
	"github.com/enclaved/enclaved/internal/testenv"
	"github.com/enclaved/enclaved/nip"
)

// `enclaved verify` passes on a running dev instance's announcement with
// its dev root and --allow-dev, and fails naming the check without it.
func TestVerifyDevInstance(t *testing.T) {
	relay := testenv.Relay(t)
	dir := t.TempDir()
	// A maintainer signs the PCRs the dev attestor derives from this binary.
	b, err := os.ReadFile(binary(t))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha512.Sum384(b)
	pcrs := attest.DevPCRs(sum[:])
	msk := nostr.GeneratePrivateKey()
	mpk, _ := nostr.GetPublicKey(msk)
	mnpub, _ := nip19.EncodePublicKey(mpk)
	var rel bytes.Buffer
	if err := run(context.Background(), []string{"release", "sign", "-version", "0.0.1", "-pcr0", hex.EncodeToString(pcrs[0]),
		"-pcr1", hex.EncodeToString(pcrs[1]), "-pcr2", hex.EncodeToString(pcrs[2])}, &rel, &bytes.Buffer{}, []string{signingKeyEnv + "=" + msk}); err != nil {
		t.Fatal(err)
	}
	files := t.TempDir()
	relFile := filepath.Join(files, "release.json")
	os.WriteFile(relFile, rel.Bytes(), 0o600)
	// The maintainer also signs the build (the certificate the image was
	// signed with: PCR8), an operator the EC2 instance (PCR4); the dev
	// attestor simulates both.
	certFile := filepath.Join(files, "signing-cert.pem")
	os.WriteFile(certFile, signingCert(t, mnpub), 0o600)
	var build, launch bytes.Buffer
	if err := run(context.Background(), []string{"release", "sign-build", "-version", "0.0.1", "-cert", certFile}, &build, &bytes.Buffer{}, []string{signingKeyEnv + "=" + msk}); err != nil {
		t.Fatal(err)
	}
	if err := run(context.Background(), []string{"release", "sign-instance", "-instance-id", "i-0123456789abcdef0"}, &launch, &bytes.Buffer{}, []string{signingKeyEnv + "=" + nostr.GeneratePrivateKey()}); err != nil {
		t.Fatal(err)
	}
	buildFile, launchFile := filepath.Join(files, "build.json"), filepath.Join(files, "instance.json")
	os.WriteFile(buildFile, build.Bytes(), 0o600)
	os.WriteFile(launchFile, launch.Bytes(), 0o600)
	p := startProcess(t, nil, append([]string{"dev", "-data-dir", dir, "-relay", relay.URL, "-http", "127.0.0.1:0", "-set", "instance.releases=" + relFile,
		"-set", "instance.build_signature=" + buildFile, "-set", "instance.instance_signature=" + launchFile,
		"-set", "attest.dev_signing_cert=" + certFile, "-set", "attest.dev_instance_id=i-0123456789abcdef0"}, lndFlags(t)...)...)
	testenv.Next(t, testenv.Subscribe(t, relay.URL, nostr.Filter{Kinds: []int{13793}, Authors: []string{npubHex(t, p.npub)}}), "announcement")
	verify := func(extra ...string) (string, error) {
		args := append([]string{"verify", "-relay", relay.URL, "-dev-root", filepath.Join(dir, "dev-root.pem")}, extra...)
		out, err := exec.Command(binary(t), append(args, p.npub)...).CombinedOutput()
		return string(out), err
	}
	out, err := verify("-allow-dev", "-maintainer", mnpub)
	if err != nil {
		t.Fatalf("verify -allow-dev -maintainer: %v\n%s", err, out)
	}
	for _, check := range []string{"maintainer policy", "build signature (PCR8)", "instance signature (PCR4)"} {
		if !strings.Contains(out, "pass  "+check) {
			t.Errorf("no passing %q check:\n%s", check, out)
		}
	}
	other, _ := nip19.EncodePublicKey(npubHex(t, p.npub))
	if out, err := verify("-allow-dev", "-maintainer", other); err == nil || !strings.Contains(out, "FAIL  maintainer policy") {
		t.Fatalf("verify with an unknown maintainer: %v\n%s", err, out)
	}
	out, err = verify()
	if err == nil || !strings.Contains(out, "FAIL  dev instance allowed") {
		t.Fatalf("verify without -allow-dev: %v\n%s", err, out)
	}
	if out, err := verify("-allow-dev", "-at", "1"); err == nil || !strings.Contains(out, "FAIL  attestation chain") {
		t.Fatalf("verify at 1970: %v\n%s", err, out)
	}
}

// signingCert is a self-signed certificate as builders sign enclave images
// with (O=Nostr, CN=the builder's npub), PEM.
func signingCert(t *testing.T, npub string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	name := pkix.Name{Organization: []string{"Nostr"}, CommonName: npub}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: name, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// `enclaved verify` on a real Nitro document labelled t=dev, as upstream's
// instances publish it: no check fails on the label, and a warning line
// says it is not a production release. (The 2022 debug document binds no
// public key: public_key alone fails.)
func TestVerifyRealEnclaveLabelledDev(t *testing.T) {
	b64, err := os.ReadFile("../../verify/testdata/debug-enclave-2022.b64")
	if err != nil {
		t.Fatal(err)
	}
	doc, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b64)))
	at := time.Unix(1658860752, 0)
	res, err := nitrite.Verify(doc, nitrite.VerifyOptions{CurrentTime: at})
	if err != nil {
		t.Fatal(err)
	}
	sk := nostr.GeneratePrivateKey()
	root := nip.TEERoot(doc, "dev", at.Add(time.Hour), nostr.Timestamp(at.Unix()))
	root.Sign(sk)
	rj, _ := json.Marshal(root)
	evt := nip.AnnouncementEvent(nip.Announcement{Name: "enclaved", Version: "0.1.3", Mode: "dev", Expires: at.Add(time.Hour),
		TEERoot: string(rj), PCRs: res.Document.PCRs}, nostr.Timestamp(at.Unix()))
	evt.Sign(sk)
	file := filepath.Join(t.TempDir(), "announcement.json")
	b, _ := json.Marshal(evt)
	os.WriteFile(file, b, 0o600)
	var out bytes.Buffer
	err = run(context.Background(), []string{"verify", "-at", strconv.FormatInt(at.Unix(), 10), "-allow-debug", file}, &out, &out, nil)
	fails := regexp.MustCompile(`(?m)^FAIL  (\S+)`).FindAllStringSubmatch(out.String(), -1)
	if err == nil || len(fails) != 1 || fails[0][1] != "public_key" || !strings.Contains(out.String(), "pass  attestation chain") {
		t.Errorf("verify: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "\nWARNING: t=dev: a real Nitro enclave, but not a production release") {
		t.Errorf("no warning line:\n%s", out.String())
	}
}
