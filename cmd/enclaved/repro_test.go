package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The enclave image must be reproducible, or PCR0/1/2 mean nothing to
// anyone who did not build it. The committed tree, extracted twice into
// different directories and built by scripts/build-enclaved.sh, once with
// this machine's build cache and once with an empty one, gives the same
// binary.
func TestReproducibleBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds enclaved twice")
	}
	top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Skipf("not a git checkout: %v", err)
	}
	root := strings.TrimSpace(string(top))
	var sums []string
	for i, cache := range []string{"", t.TempDir()} {
		src := t.TempDir()
		archive := exec.Command("git", "-C", root, "archive", "HEAD")
		untar := exec.Command("tar", "-x", "-C", src)
		untar.Stdin, _ = archive.StdoutPipe()
		if err := untar.Start(); err != nil {
			t.Fatal(err)
		}
		if err := archive.Run(); err != nil {
			t.Fatal(err)
		}
		if err := untar.Wait(); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(t.TempDir(), "enclaved")
		// At low priority: the other packages' tests run meanwhile, and
		// their time-outs must not pay for these builds.
		build := exec.Command("nice", "-n", "19", filepath.Join(src, "scripts", "build-enclaved.sh"), out, src)
		build.Env = os.Environ()
		if cache != "" {
			build.Env = append(build.Env, "GOCACHE="+cache)
		}
		var stderr bytes.Buffer
		build.Stderr = &stderr
		if err := build.Run(); err != nil {
			t.Fatalf("build %d: %v\n%s", i+1, err, stderr.String())
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		sums = append(sums, hex.EncodeToString(sum[:]))
	}
	if sums[0] != sums[1] {
		t.Errorf("two builds of the same tree differ: %s and %s", sums[0], sums[1])
	}
	t.Logf("enclaved sha256 %s", sums[0])
}
