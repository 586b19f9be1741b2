package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/internal/proc"
	"github.com/enclaved/enclaved/internal/testenv"
)

// The docker-compose topology, built from this tree offline (FROM
// scratch): devnet, parent and an enclave with no network at all. It
// announces itself, answers a DM through the relay, and serves its API
// over TLS that terminates in the enclave, through the parent's port.
func TestComposeTopology(t *testing.T) {
	if _, err := exec.LookPath("docker-compose"); err != nil {
		t.Skip("needs docker-compose")
	}
	testenv.Docker(t)
	root, _ := filepath.Abs("../..")
	relayPort, err1 := proc.FreePort()
	httpsPort, err2 := proc.FreePort()
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	project := fmt.Sprintf("enclavedtest%d", os.Getpid())
	env := append(os.Environ(), "COMPOSE_PROJECT="+project,
		"ENCLAVED_RELAY_PORT="+strconv.Itoa(relayPort), "ENCLAVED_HTTPS_PORT="+strconv.Itoa(httpsPort))
	compose := func(args ...string) ([]byte, error) {
		cmd := exec.Command(filepath.Join(root, "scripts/compose.sh"), args...)
		cmd.Dir, cmd.Env = root, env
		return cmd.CombinedOutput()
	}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := compose("logs", "--tail", "40")
			t.Logf("compose logs:\n%s", out)
		}
		if out, err := compose("down", "-v"); err != nil {
			t.Errorf("compose down: %v\n%s", err, out)
		}
	})
	if out, err := compose("up", "-d"); err != nil {
		t.Fatalf("compose up: %v\n%s", err, out)
	}

	relay := "ws://127.0.0.1:" + strconv.Itoa(relayPort)
	ctx := context.Background()
	if err := proc.WaitFor(ctx, "the devnet relay", 2*time.Minute, func(ctx context.Context) (bool, error) {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(relayPort), time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil, err
	}); err != nil {
		t.Fatal(err)
	}
	ann := testenv.Next(t, testenv.Subscribe(t, relay, nostr.Filter{Kinds: []int{13793}}), "the enclave's announcement")
	c := testenv.NewClient(t, relay)
	c.Send(t, "nip17", ann.PubKey, "help")
	c.Await(t, ann.PubKey, "rent a container")

	// The enclave's dev CA, read from its volume, is the only root the
	// client trusts.
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if out, err := exec.Command("docker", "cp", project+"_enclave_1:/enclave/dev-ca.pem", ca).CombinedOutput(); err != nil {
		t.Fatalf("docker cp: %v\n%s", err, out)
	}
	pem, _ := os.ReadFile(ca)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("no dev CA")
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := hc.Get("https://127.0.0.1:" + strconv.Itoa(httpsPort) + "/api/v1/instance")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var info struct{ Pubkey string }
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil || info.Pubkey != ann.PubKey {
		t.Errorf("API over TLS says pubkey %q (%v), want %s", info.Pubkey, err, ann.PubKey)
	}

	// The enclave has no network of its own.
	out, err := exec.Command("docker", "inspect", "-f", "{{.HostConfig.NetworkMode}}", project+"_enclave_1").Output()
	if err != nil || string(out) != "none\n" {
		t.Errorf("the enclave's network mode is %q (%v), want none", out, err)
	}
}
