package egressproxy_test

import (
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/enclaved/enclaved/egress"

	"golang.org/x/sys/unix"

	"github.com/enclaved/enclaved/egressproxy"
	"github.com/enclaved/enclaved/parent"
)

const (
	childEnv = "EGRESSPROXY_TEST_LINK"
	echoEnv  = "EGRESSPROXY_TEST_ECHO"
)

// The transparent proxy as it runs in the enclave, with real iptables:
// the test binary re-runs itself in a network namespace of its own (the
// enclave), with a second namespace joined to it by a veth pair (the
// container and its bridge). The enclave reaches the parent, which runs
// here, only over a unix socket. The container's connections to its
// allowed host's address are redirected to the proxy, which reads their
// original destination and tunnels them through the parent; any other
// destination is refused and logged.
func TestTransparentRedirect(t *testing.T) {
	if addr := os.Getenv(childEnv); addr != "" {
		enclaveSide(t, addr)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces and iptables")
	}
	for _, tool := range []string{"ip", "iptables", "nsenter", "sleep"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sock := filepath.Join(t.TempDir(), "link.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go (&parent.Server{BlobDir: t.TempDir()}).Serve(ctx, l)
	echo, dials := echoServer(t)

	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestTransparentRedirect$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"=unix:"+sock, echoEnv+"="+echo)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("enclave side: %v\n%s", err, out)
	}
	t.Logf("enclave side:\n%s", out)
	// Only the allowed connection reached the server.
	if n := dials(); n != 1 {
		t.Errorf("the server had %d connections, want 1", n)
	}
}

func sh(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// enclaveSide runs in the enclave's namespace.
func enclaveSide(t *testing.T, linkAddr string) {
	sh(t, "ip", "link", "set", "lo", "up")
	// The container: a process holding a namespace of its own.
	// (No Pdeathsig: it fires when the creating thread exits, and
	// dialFrom ends threads.)
	holder := exec.Command("sleep", "120")
	holder.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { holder.Process.Kill(); holder.Wait() }()
	pid := strconv.Itoa(holder.Process.Pid)
	in := func(args ...string) { sh(t, append([]string{"nsenter", "-t", pid, "-n"}, args...)...) }
	sh(t, "ip", "link", "add", "br-web", "type", "veth", "peer", "name", "eth0")
	sh(t, "ip", "link", "set", "eth0", "netns", pid)
	sh(t, "ip", "addr", "add", "10.77.0.1/24", "dev", "br-web")
	sh(t, "ip", "link", "set", "br-web", "up")
	in("ip", "link", "set", "lo", "up")
	in("ip", "addr", "add", "10.77.0.2/24", "dev", "eth0")
	in("ip", "link", "set", "eth0", "up")
	in("ip", "route", "add", "default", "via", "10.77.0.1")

	w := newWorld(t, linkAddr, os.Getenv(echoEnv), "api.example.com:443", "other.example.com:443")
	plan, err := egress.NewPlan([]string{"api.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	w.egress.Allow = append(w.egress.Allow, w.echo)
	m := &egressproxy.Manager{Dial: w.dial, Log: w.egress.Log, Firewall: &egressproxy.Firewall{}}
	ctx := context.Background()
	if err := m.Confine(ctx, "web", "br-web", netip.MustParseAddr("10.77.0.1"), plan); err != nil {
		t.Fatal(err)
	}
	if err := m.Confine(ctx, "web", "br-web", netip.MustParseAddr("10.77.0.1"), plan); err != nil {
		t.Fatalf("confining twice: %v", err)
	}
	rules, _ := exec.Command("iptables-save").CombinedOutput()
	if n := strings.Count(string(rules), "-i br-web"); n != 3 {
		t.Errorf("%d rules for br-web, want 3:\n%s", n, rules)
	}

	// What the container's /etc/hosts says api.example.com is.
	api := strings.SplitN(plan.ExtraHosts()[0], ":", 2)[1]
	cases := []struct{ dst, want, log string }{
		{api + ":443", "ping", `msg="container egress" container=web to=api.example.com:443`},
		{api + ":80", "", "not allowed (port 80)"},
		{"198.18.0.9:443", "", "198.18.0.9 is not a host this container asked for"},
		// The enclave's own address: redirected like everything else.
		{"10.77.0.1:8080", "", "10.77.0.1 is not a host this container asked for"},
	}
	for _, c := range cases {
		conn, err := dialFrom(pid, c.dst)
		if err != nil {
			t.Errorf("%s: %v", c.dst, err)
			continue
		}
		if got := roundTrip(t, conn); got != c.want {
			t.Errorf("%s: got %q, want %q", c.dst, got, c.want)
		}
		conn.Close()
		if !strings.Contains(w.logs.String(), c.log) {
			t.Errorf("%s: log has no %q:\n%s", c.dst, c.log, w.logs)
		}
	}

	if err := m.Release(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	rules, _ = exec.Command("iptables-save").CombinedOutput()
	if strings.Contains(string(rules), "br-web") {
		t.Errorf("rules left after Release:\n%s", rules)
	}
}

// dialFrom dials addr from the network namespace of process pid: the
// socket is made on a thread that joined it.
func dialFrom(pid, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	res := make(chan result)
	go func() {
		// The thread is never unlocked: it dies with the goroutine
		// rather than going back to the scheduler in another namespace.
		runtime.LockOSThread()
		f, err := os.Open("/proc/" + pid + "/ns/net")
		if err != nil {
			res <- result{nil, err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			res <- result{nil, err}
			return
		}
		d := net.Dialer{Timeout: 10 * time.Second}
		c, err := d.Dial("tcp", addr)
		res <- result{c, err}
	}()
	r := <-res
	return r.c, r.err
}
