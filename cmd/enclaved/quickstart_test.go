package main

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/enclaved/enclaved/internal/proc"
	"github.com/enclaved/enclaved/internal/testenv"
)

// A dev instance across a restart, through the binary alone: `enclaved dev`
// with its own relay and regtest Lightning, `enclaved dm` to deploy,
// `enclaved dev pay` to pay; after a restart (with a fresh regtest network)
// the container and its balance are kept and can be topped up.
func TestDevRestartKeepsContainers(t *testing.T) {
	imgs := testenv.Images(t)
	testenv.Docker(t)
	dir, clientDir := t.TempDir(), t.TempDir()
	args := []string{"dev", "-data-dir", dir, "-set", "dev.relay_listen=127.0.0.1:0", "-http", "127.0.0.1:0"}
	p := startProcess(t, nil, args...)
	t.Cleanup(func() { removeAll(t, containerID(t, dir, "quick")) })
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(binary(t), args...).CombinedOutput()
		if err != nil {
			t.Fatalf("enclaved %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	dm := func(p *process, text string) string {
		t.Helper()
		// The deploy's answer alone: the payment comes from this test.
		return run(append([]string{"dm", "-data-dir", clientDir, "-relay", p.relay, "-replies", "1", p.npub}, strings.Fields(text)...)...)
	}

	quote := dm(p, "deploy "+imgs.Hello.Ref+" name=quick")
	if !strings.Contains(quote, "Quote") {
		t.Fatalf("deploy: %s", quote)
	}
	if out := run("dev", "pay", "-data-dir", dir, testenv.Invoice(t, quote)); !strings.Contains(out, "paid 10 sats") {
		t.Fatalf("dev pay: %s", out)
	}
	// The payment settles in the instance asynchronously; the separate
	// process is observed through its database.
	if err := proc.WaitFor(context.Background(), "quick running", time.Minute, func(context.Context) (bool, error) {
		var state string
		err := openRO(t, dir).QueryRow(`SELECT state FROM containers WHERE name = 'quick'`).Scan(&state)
		return state == "running", err
	}); err != nil {
		t.Fatal(err)
	}
	if out := dm(p, "status quick"); !strings.Contains(out, "quick: running") {
		t.Fatalf("status: %s", out)
	}

	p.stop(t)
	first := p
	p = startProcess(t, nil, args...)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("first run:\n%s\nsecond run:\n%s", first.stderr.String(), p.stderr.String())
		}
	})
	invoice := dm(p, "topup quick 3")
	if out := run("dev", "pay", "-data-dir", dir, testenv.Invoice(t, invoice)); !strings.Contains(out, "paid 3 sats") {
		t.Fatalf("dev pay after a restart: %s", out)
	}
	if out := dm(p, "status quick"); !strings.Contains(out, "quick: running") {
		t.Fatalf("status after the restart: %s", out)
	}
	// The operator's audit, while the instance runs: every check passes.
	if out := run("audit", "-data-dir", dir); !strings.Contains(out, "pass  every balance is its credits minus its debits, exactly") || strings.Contains(out, "FAIL") {
		t.Errorf("audit:\n%s", out)
	}
}
