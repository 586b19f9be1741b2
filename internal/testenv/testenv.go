// Package testenv is enclaved's real test stack: an in-process Nostr relay,
// a Lightning regtest network (btcd + two LND nodes), a local OCI registry
// with test images built FROM scratch, and the machine's Docker engine. Each
// part is one call from any Go test.
//
// A part that is missing fails the test with a message naming the part and
// how to get it; nothing is skipped silently. Parts that cost seconds to start
// (Lightning, the registry) are shared by the tests of one package and torn
// down by Main, which every package using them must call from TestMain.
//
// Test-only: nothing in production imports it.
package testenv

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	mainCalled bool
	// The mutex protects the following elements.
	mu       sync.Mutex
	closers  []func()
	tempRoot string
)

// Main runs the package's tests and then stops every shared part. Use it as
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
func Main(m *testing.M) {
	mainCalled = true
	code := m.Run()
	mu.Lock()
	cs := closers
	closers = nil
	mu.Unlock()
	for i := len(cs) - 1; i >= 0; i-- {
		cs[i]()
	}
	if tempRoot != "" && os.Getenv("ENCLAVED_KEEP_TESTENV") == "" {
		os.RemoveAll(tempRoot)
	}
	os.Exit(code)
}

func requireMain(tb testing.TB, part string) {
	tb.Helper()
	if !mainCalled {
		tb.Fatalf("%s: shared test parts need func TestMain(m *testing.M) { testenv.Main(m) } in this package", part)
	}
}

// sharedPart is a part started once per test binary and stopped by Main.
// Every test asking for a part whose start failed fails with that error.
type sharedPart[T any] struct {
	once sync.Once
	val  T
	err  error
}

func (s *sharedPart[T]) get(tb testing.TB, part string, start func() (T, func(), error)) T {
	tb.Helper()
	requireMain(tb, part)
	s.once.Do(func() {
		var stop func()
		s.val, stop, s.err = start()
		if stop != nil {
			atExit(stop)
		}
	})
	if s.err != nil {
		tb.Fatalf("%s: %v", part, s.err)
	}
	return s.val
}

func atExit(f func()) {
	mu.Lock()
	defer mu.Unlock()
	closers = append(closers, f)
}

// sharedDir returns a fresh directory for a shared part, under one temporary
// root removed by Main (kept if ENCLAVED_KEEP_TESTENV is set).
func sharedDir(name string) (string, error) {
	mu.Lock()
	defer mu.Unlock()
	if tempRoot == "" {
		d, err := os.MkdirTemp("", "enclaved-testenv-")
		if err != nil {
			return "", err
		}
		tempRoot = d
	}
	return os.MkdirTemp(tempRoot, name+"-")
}

// RepoRoot returns the enclaved module's root directory.
func RepoRoot() (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return "", fmt.Errorf("find module root: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// proc is a child process whose output goes to a log file. It dies with the
// test binary (SIGKILL on parent death), so a crashed test leaks nothing.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
	waitErr error
}

func startProc(name, dir, bin string, args ...string) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		logf.Close()
		close(p.exited)
	}()
	return p, nil
}

// kill stops the process at once and waits for it.
func (p *proc) kill() {
	if p == nil {
		return
	}
	select {
	case <-p.exited:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// tail returns the last lines of the process log, for error messages.
func (p *proc) tail(n int) string {
	b, _ := os.ReadFile(p.logPath)
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// dead returns an error if the process has exited.
func (p *proc) dead() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s exited (%v); last log lines:\n%s", p.name, p.waitErr, p.tail(20))
	default:
		return nil
	}
}

// waitFor polls cond every interval until it reports done, returns an error,
// a watched process dies, or timeout passes. It synchronises with external
// processes (btcd, lnd, the registry), which offer no event to wait on.
func waitFor(ctx context.Context, what string, timeout time.Duration, cond func(context.Context) (bool, error), watch ...*proc) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		for _, p := range watch {
			if err := p.dead(); err != nil {
				return fmt.Errorf("waiting for %s: %w", what, err)
			}
		}
		ok, err := cond(ctx)
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("waiting for %s: %w (last error: %v)", what, ctx.Err(), last)
			}
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-tick.C:
		}
	}
}
