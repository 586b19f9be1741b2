package main

import (
	"context"
	"crypto/sha512"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/enclaved/enclaved/attest"
	"github.com/enclaved/enclaved/internal/testenv"
)

// split is a key store, a parent and an enclave as separate processes
// linked over TCP on 127.0.0.1. The enclave's data dir is its RAM disk:
// wiped before every start. The dev root stands for the Nitro hardware
// and stays.
type split struct {
	t          *testing.T
	dir        string
	parentAddr string
	keystore   string // npub
	enclave    *process
	args       []string
}

func newSplit(t *testing.T, extra ...string) *split {
	relay := testenv.Relay(t)
	imgs := testenv.Images(t)
	ln := testenv.Lightning(t)
	testenv.Docker(t)
	s := &split{t: t, dir: t.TempDir()}
	root := filepath.Join(s.dir, "hardware")
	h := sha512.Sum384([]byte("root"))
	if _, err := attest.LoadOrCreateDev(root, h[:], time.Now); err != nil {
		t.Fatal(err)
	}
	ks := startProcessWith(t, &syscall.SysProcAttr{}, "keystore up", nil, "keystore", "-data-dir", filepath.Join(s.dir, "keystore"),
		"-relay", relay.URL, "-set", "keystore.dev_root="+filepath.Join(root, "dev-root.pem"))
	s.keystore = ks.npub
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.parentAddr = l.Addr().String()
	l.Close()
	startProcessWith(t, &syscall.SysProcAttr{}, "parent:", nil, "parent", "-data-dir", filepath.Join(s.dir, "parent"), "-listen", s.parentAddr)
	registry := strings.SplitN(imgs.Hello.Ref, "/", 2)[0]
	n := ln.Operator
	s.args = append([]string{"enclave", "-data-dir", filepath.Join(s.dir, "enclave"), "-parent", s.parentAddr,
		"-set", "nostr.relays=" + relay.URL, "-set", "lightning.grpc=" + n.GRPCAddr, "-set", "lightning.tls_cert=" + n.TLSCertPath(),
		"-set", "lightning.macaroon=" + n.MacaroonPath("invoice"), "-set", "enclave.egress=" + registry,
		"-set", "backup.mode=keystore", "-set", "keystore.pubkey=" + s.keystore, "-set", "attest.dev_root_dir=" + root,
		"-set", "backup.delay=100ms", "-set", "http.public_url=https://enclaved.test"}, extra...)
	return s
}

// boot wipes the enclave's data dir and starts it.
func (s *split) boot() *process {
	s.t.Helper()
	if err := os.RemoveAll(filepath.Join(s.dir, "enclave")); err != nil {
		s.t.Fatal(err)
	}
	s.enclave = startProcessWith(s.t, &syscall.SysProcAttr{}, "try:", nil, s.args...)
	return s.enclave
}

// kill SIGKILLs the enclave.
func (s *split) kill() {
	s.enclave.cmd.Process.Kill()
	<-s.enclave.exited
}

func (s *split) blob(name string) string { return filepath.Join(s.dir, "parent", "blobs", name) }

// An enclave killed and started again on an empty disk comes back as the
// same instance with its ledger and its container, from the parent's
// backup and the key store's keys; when the parent alters the backup, it
// refuses to start and says why.
func TestRestartFromBackup(t *testing.T) {
	s := newSplit(t)
	imgs := testenv.Images(t)
	ln := testenv.Lightning(t)
	first := s.boot()
	self := npubHex(t, first.npub)
	c := testenv.NewClient(t, first.relay)
	c.Send(t, "nip17", self, "deploy "+imgs.Hello.Ref+" name=kept")
	if _, err := ln.Payer.Pay(context.Background(), testenv.Invoice(t, c.Await(t, self, "Quote").Text)); err != nil {
		t.Fatal(err)
	}
	c.Await(t, self, "kept is running")
	id := containerID(t, filepath.Join(s.dir, "enclave"), "kept")
	t.Cleanup(func() { removeAll(t, id) })

	s.kill()
	again := s.boot()
	if again.npub != first.npub {
		t.Fatalf("restarted as %s, was %s", again.npub, first.npub)
	}
	c.Send(t, "nip17", self, "status")
	c.Await(t, self, "kept: running")
	if got := containerID(t, filepath.Join(s.dir, "enclave"), "kept"); got != id {
		t.Errorf("restored record %s, want %s", got, id)
	}
	if credits := countCredits(t, filepath.Join(s.dir, "enclave"), id); credits != 1 {
		t.Errorf("%d credits after the restore, want 1", credits)
	}

	// A graceful stop takes a last backup; the parent then alters it.
	again.stop(t)
	var newest string
	for _, name := range []string{"state-a", "state-b"} {
		if fi, err := os.Stat(s.blob(name)); err == nil && (newest == "" || fi.ModTime().After(mustStat(t, s.blob(newest)).ModTime())) {
			newest = name
		}
	}
	b, err := os.ReadFile(s.blob(newest))
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-10] ^= 1
	os.WriteFile(s.blob(newest), b, 0o600)
	os.RemoveAll(filepath.Join(s.dir, "enclave"))
	p := startRefused(t, s.args...)
	if out := p.stderr.String(); !strings.Contains(out, "backup refused: blob "+newest+" does not match checkpoint") || !strings.Contains(out, "backup.accept_loss") {
		t.Errorf("the altered backup was not refused loudly:\n%s", out)
	}
}

func mustStat(t *testing.T, path string) os.FileInfo {
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi
}

// startRefused runs the binary and waits for it to exit with an error.
func startRefused(t *testing.T, args ...string) *process {
	t.Helper()
	p := &process{stderr: &testenv.SyncBuffer{}}
	cmd := exec.CommandContext(t.Context(), binary(t), args...)
	cmd.Stderr = p.stderr
	cmd.WaitDelay = time.Minute
	if err := cmd.Run(); err == nil {
		t.Fatalf("enclaved %s started; want a refusal", args[0])
	}
	return p
}
