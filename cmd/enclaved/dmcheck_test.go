package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/internal/testenv"
)

// `enclaved dm … deploy` verifies the instance before it sends the deploy,
// and prints what it verified first: against a dev instance, with its dev
// root (found in the shared data dir), every check passes and it warns
// loudly that it is a dev instance; without the root, the failing chain is
// named and it warns not to pay. The deploy is still sent and answered.
func TestDMVerifiesBeforeDeploy(t *testing.T) {
	dir := t.TempDir()
	info, _, _ := startDev(t, dir)
	testenv.Next(t, testenv.Subscribe(t, info.RelayURL, nostr.Filter{Kinds: []int{13793}, Authors: []string{info.Pubkey}}), "announcement")
	dm := func(dataDir string) string {
		t.Helper()
		var out bytes.Buffer
		err := run(context.Background(), []string{"dm", "-data-dir", dataDir, "-relay", info.RelayURL, "-replies", "1",
			info.Npub, "deploy", "127.0.0.1:1/nothing/here"}, &out, &out, nil)
		if err != nil {
			t.Fatalf("dm: %v\n%s", err, out.String())
		}
		return out.String()
	}
	out := dm(dir)
	check, rest, ok := strings.Cut(out, "sent by nip17")
	if !ok || !strings.HasPrefix(check, "checking the instance before the deploy") || !strings.Contains(rest, "--- nip17 reply") {
		t.Fatalf("the verification does not come first, before the deploy's answer:\n%s", out)
	}
	for _, want := range []string{"t=dev", "attestation: dev, chained to a dev root", "\n  PCR0 ", "\n  PCR2 ", "release signers: none",
		"checks passed", "\nWARNING: a DEV instance"} {
		if !strings.Contains(check, want) {
			t.Errorf("verification lacks %q:\n%s", want, check)
		}
	}
	if strings.Contains(check, "FAIL") {
		t.Errorf("a check failed with the dev root at hand:\n%s", check)
	}
	out = dm(t.TempDir())
	check, _, _ = strings.Cut(out, "sent by nip17")
	if !strings.Contains(check, "  FAIL  attestation chain") || !strings.Contains(check, "FAILED") || !strings.Contains(check, "Do not pay it.") {
		t.Errorf("without the dev root:\n%s", out)
	}
}
