// Package proc runs the helper processes of dev mode and tests (btcd, lnd,
// the local registry): each child logs to a file and dies with its parent,
// and WaitFor polls a condition while watching that the child lives.
//
// Dev and test tooling only; never part of an enclave.
package proc

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Proc is a child process whose output goes to a log file. It dies with the
// test binary (SIGKILL on parent death), so a crashed test leaks nothing.
type Proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
	waitErr error
}

// Start starts bin in dir with its output in dir/name.log.
func Start(name, dir, bin string, args ...string) (*Proc, error) {
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
	p := &Proc{name: name, cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		logf.Close()
		close(p.exited)
	}()
	return p, nil
}

// Kill stops the process at once and waits for it.
func (p *Proc) Kill() {
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

// Tail returns the last lines of the process log, for error messages.
func (p *Proc) Tail(n int) string {
	b, _ := os.ReadFile(p.logPath)
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// Dead returns an error if the process has exited.
func (p *Proc) Dead() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s exited (%v); last log lines:\n%s", p.name, p.waitErr, p.Tail(20))
	default:
		return nil
	}
}

// WaitFor polls cond every interval until it reports done, returns an error,
// a watched process dies, or timeout passes. It synchronises with external
// processes (btcd, lnd, the registry), which offer no event to wait on.
func WaitFor(ctx context.Context, what string, timeout time.Duration, cond func(context.Context) (bool, error), watch ...*Proc) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		for _, p := range watch {
			if err := p.Dead(); err != nil {
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
