package main

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/nbd-wtf/go-nostr/nip19"

	"github.com/enclaved/enclaved/deployer"
	"github.com/enclaved/enclaved/deployer/docker"
	"github.com/enclaved/enclaved/internal/crashpoint"
	"github.com/enclaved/enclaved/internal/testenv"
	_ "github.com/enclaved/enclaved/store" // the sqlite3 driver
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// binary builds the enclaved command once per test run.
func binary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "enclaved-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "enclaved")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// process is `enclaved dev` running as a child process.
type process struct {
	cmd    *exec.Cmd
	npub   string
	relay  string
	http   string // host:port of the HTTP API
	stderr *testenv.SyncBuffer
	exited chan struct{}
}

// startProcess runs `enclaved dev` with args and extra environment and
// waits until it prints its npub, relay and the quick start's hints, or
// exits.
func startProcess(t *testing.T, env []string, args ...string) *process {
	t.Helper()
	return startProcessWith(t, &syscall.SysProcAttr{}, "Try it", env, args...)
}

// startProcessWith starts enclaved with attr (Pdeathsig is added) and
// waits for a line starting with upLine.
func startProcessWith(t *testing.T, attr *syscall.SysProcAttr, upLine string, env []string, args ...string) *process {
	t.Helper()
	cmd := exec.Command(binary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	attr.Pdeathsig = syscall.SIGKILL
	cmd.SysProcAttr = attr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, stderr: &testenv.SyncBuffer{}, exited: make(chan struct{})}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	up := make(chan [3]string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		var npub, relay, api string
		for sc.Scan() {
			line := sc.Text()
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "npub:"); ok {
				npub = strings.TrimSpace(v)
			}
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "relay:"); ok && relay == "" {
				relay = strings.TrimSpace(v)
			}
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "http:"); ok {
				api = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(v), "http://"), "/api/v1/instance")
			}
			if strings.HasPrefix(line, upLine) {
				up <- [3]string{npub, relay, api}
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	go func() { cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("enclaved %s stderr:\n%s", strings.Join(args, " "), p.stderr.String())
		}
	})
	select {
	case v := <-up:
		p.npub, p.relay, p.http = v[0], v[1], v[2]
		return p
	case <-p.exited:
		t.Fatalf("enclaved exited before it was up (%v); stderr:\n%s", cmd.ProcessState, p.stderr.String())
	case <-time.After(2 * time.Minute):
		t.Fatalf("enclaved did not come up; stderr:\n%s", p.stderr.String())
	}
	return nil
}

// stop stops the process with SIGTERM, as an operator would.
func (p *process) stop(t *testing.T) {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		t.Errorf("enclaved did not stop on SIGTERM; stderr:\n%s", p.stderr.String())
	}
}

// waitKilled waits until the process died of SIGKILL at its crash point.
func (p *process) waitKilled(t *testing.T) {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(time.Minute):
		t.Fatalf("enclaved did not reach its crash point; stderr:\n%s", p.stderr.String())
	}
	ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("enclaved ended with %v, want SIGKILL; stderr:\n%s", p.cmd.ProcessState, p.stderr.String())
	}
}

// The instance is SIGKILLed between a payment's settlement and its
// container's start (after the credit commits; after the container is
// created). After a restart the credit is applied once and the container
// runs once; another restart changes nothing.
func TestCrashBetweenSettlementAndStart(t *testing.T) {
	relay := testenv.Relay(t)
	imgs := testenv.Images(t)
	ln := testenv.Lightning(t)
	dc := testenv.Docker(t)
	for _, point := range []string{"after-credit", "after-create"} {
		t.Run(point, func(t *testing.T) {
			dir := t.TempDir()
			args := append([]string{"dev", "-data-dir", dir, "-relay", relay.URL, "-http", "127.0.0.1:0"}, lndFlags(t)...)
			p := startProcess(t, []string{crashpoint.Env + "=" + point}, args...)
			self := npubHex(t, p.npub)
			c := testenv.NewClient(t, relay.URL)
			c.Send(t, "nip17", self, "deploy "+imgs.Hello.Ref+" name=crash-"+point)
			quote := c.Await(t, self, "Quote")
			if _, err := ln.Payer.Pay(context.Background(), testenv.Invoice(t, quote.Text)); err != nil {
				t.Fatal(err)
			}
			p.waitKilled(t)

			again := startProcess(t, nil, args...)
			c.Await(t, self, "crash-"+point+" is running")
			id := containerID(t, dir, "crash-"+point)
			list, err := dc.ContainerList(context.Background(), container.ListOptions{All: true,
				Filters: filters.NewArgs(filters.Arg("label", deployer.LabelID+"="+id))})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { removeAll(t, id) })
			if len(list) != 1 || list[0].State != "running" {
				t.Fatalf("%d containers for the record (%+v), want one running", len(list), list)
			}
			testenv.WaitLog(t, dc, list[0].ID, "starts 1")
			if credits := countCredits(t, dir, id); credits != 1 {
				t.Errorf("%d credits for one payment, want 1", credits)
			}
			// A clean restart: the running container is adopted as it is.
			again.stop(t)
			startProcess(t, nil, args...)
			c.Send(t, "nip17", self, "status")
			c.Await(t, self, "crash-"+point+": running")
			if info, err := dc.ContainerInspect(context.Background(), list[0].ID); err != nil || !info.State.Running || info.RestartCount != 0 {
				t.Errorf("after a clean restart: %v %+v", err, info.State)
			}
			if credits := countCredits(t, dir, id); credits != 1 {
				t.Errorf("%d credits after another restart, want 1", credits)
			}
		})
	}
}

// removeAll removes a record's container and its network, as the
// deployer does.
func removeAll(t *testing.T, id string) {
	rt, err := docker.New(context.Background())
	if err != nil {
		t.Error(err)
		return
	}
	defer rt.Close()
	if err := rt.Remove(context.Background(), deployer.RuntimeName(id)); err != nil {
		t.Errorf("cleanup: %v", err)
	}
}

func openRO(t *testing.T, dir string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(dir, "enclaved.db")+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func containerID(t *testing.T, dir, name string) string {
	t.Helper()
	var id string
	if err := openRO(t, dir).QueryRow(`SELECT id FROM containers WHERE name = ?`, name).Scan(&id); err != nil {
		t.Fatalf("container %s: %v", name, err)
	}
	return id
}

func countCredits(t *testing.T, dir, id string) int {
	t.Helper()
	var n int
	if err := openRO(t, dir).QueryRow(`SELECT COUNT(*) FROM ledger WHERE container_id = ? AND kind = 'credit'`, id).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func npubHex(t *testing.T, npub string) string {
	t.Helper()
	prefix, v, err := nip19.Decode(npub)
	if err != nil || prefix != "npub" {
		t.Fatalf("%q is not an npub: %v", npub, err)
	}
	return v.(string)
}
