package enclave_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/enclaved/enclaved/enclave"
	"github.com/enclaved/enclaved/internal/testenv"
	"github.com/enclaved/enclaved/link"
	"github.com/enclaved/enclaved/link/linknet"
	"github.com/enclaved/enclaved/parent"
	"github.com/enclaved/enclaved/tunnel"
)

// floodParentEnv makes the test binary run the parent side of
// TestIdleFloodLeavesBackupsAndEgress, with its blobs in the named
// directory.
const floodParentEnv = "ENCLAVED_TEST_FLOOD_PARENT"

// Thousands of idle TCP connections to the parent's forwarded public port
// (1,500 here; 5,000 with ENCLAVED_ABUSE_FULL=1) do not stop the
// enclave's own traffic. The parent runs in a process of its own, the
// enclave here, linked over TCP (standing in for vsock). The parent
// forwards exactly its ingress cap (link.DefaultLimits) and closes every
// other connection at once, logging why; meanwhile the enclave still
// dials out through the parent and puts and gets blobs (the backup path).
// Once the attacker lets go, the public port answers again. The enclave's
// header timeout is raised here so the forwarded connections stay open
// for the whole test (the worst case: the instance's 10 s would close
// them). Timings and the processes' RSS are logged, for the README.
func TestIdleFloodLeavesBackupsAndEgress(t *testing.T) {
	if dir := os.Getenv(floodParentEnv); dir != "" {
		floodParent(t, dir)
		return
	}
	n := 1500
	if os.Getenv("ENCLAVED_ABUSE_FULL") != "" {
		n = 5000
	}
	var rl unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_NOFILE, &rl)
	if fit := int(rl.Cur) - 256; n > fit {
		t.Logf("%d connections: the file descriptor limit is %d", fit, rl.Cur)
		n = fit
	}
	ingressCap := link.DefaultLimits().PerService[link.Ingress]

	linkAddr, publicAddr, parentPid, parentLog := startFloodParent(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ingress := tunnel.NewIngress(443)
	keeper := &link.Keeper{Handler: ingress.Handle, Dial: func(ctx context.Context) (net.Conn, error) {
		return linknet.DialAddr(ctx, linkAddr)
	}}
	go keeper.Run(ctx)
	lim := enclave.DefaultHTTPLimits()
	lim.ReadHeaderTimeout = 10 * time.Minute
	lim.MaxConnsPerClient = 0 // a flood from many addresses: the link's worst case
	logs := &testenv.SyncBuffer{}
	hs, hl := enclave.NewHTTPServer(hello, ingress.Listener(443), nil, lim, slog.New(slog.NewTextHandler(logs, nil)))
	go hs.Serve(hl)
	defer hs.Close()
	echo, _ := echoServer(t)
	egress := &tunnel.Egress{Link: keeper, Allow: []string{echo}}
	sess, err := keeper.Session(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// The enclave's own traffic: a dial out with a round trip, a 1 MiB blob
	// put and read back.
	blob := make([]byte, 1<<20)
	rand.Read(blob)
	var dialT, putT, getT []time.Duration
	work := func(rounds int, when string) {
		t.Helper()
		for i := range rounds {
			octx, ocancel := context.WithTimeout(ctx, 30*time.Second)
			t0 := time.Now()
			c, err := egress.DialContext(octx, "tcp", echo)
			if err != nil {
				t.Fatalf("%s: dial: %v", when, err)
			}
			c.Write([]byte("ping"))
			buf := make([]byte, 4)
			if _, err := io.ReadFull(c, buf); err != nil {
				t.Fatalf("%s: dial round trip: %v", when, err)
			}
			c.Close()
			t1 := time.Now()
			name := fmt.Sprintf("backup-%d", i)
			if err := tunnel.PutBlob(octx, keeper, name, bytes.NewReader(blob)); err != nil {
				t.Fatalf("%s: blob put: %v", when, err)
			}
			t2 := time.Now()
			rc, err := tunnel.GetBlob(octx, keeper, name)
			if err != nil {
				t.Fatalf("%s: blob get: %v", when, err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || !bytes.Equal(got, blob) {
				t.Fatalf("%s: blob get: %d bytes, %v", when, len(got), err)
			}
			ocancel()
			dialT, putT, getT = append(dialT, t1.Sub(t0)), append(putT, t2.Sub(t1)), append(getT, time.Since(t2))
		}
	}
	report := func(when string) {
		t.Logf("%s: median dial+round trip %v, 1 MiB blob put %v, get %v; RSS parent %d MiB, enclave %d MiB",
			when, median(dialT), median(putT), median(getT), rss(t, parentPid)>>20, rss(t, os.Getpid())>>20)
		dialT, putT, getT = nil, nil, nil
	}
	work(3, "warm-up")
	dialT, putT, getT = nil, nil, nil
	work(20, "no idle connections")
	report("no idle connections")

	// The flood: n connections that never send a byte.
	conns := make([]*net.TCPConn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		c, err := net.Dial("tcp", publicAddr)
		if err != nil {
			t.Fatalf("connection %d of %d: %v", len(conns)+1, n, err)
		}
		conns = append(conns, c.(*net.TCPConn))
	}
	testenv.Eventually(t, 60*time.Second, fmt.Sprintf("the parent to forward %d connections and close the other %d", ingressCap, n-ingressCap), func() bool {
		_, forwarded := sess.Streams(link.Ingress)
		return forwarded == ingressCap && closedCount(conns) == n-ingressCap
	})
	if sess.Err() != nil {
		t.Fatalf("the link session ended: %v", sess.Err())
	}
	testenv.Eventually(t, 10*time.Second, "the parent's log", func() bool {
		return strings.Contains(parentLog.String(), fmt.Sprintf("public connection closed: too many ingress streams (at most %d)", ingressCap))
	})
	if lines := strings.Count(parentLog.String(), "public connection closed"); lines > 10 {
		t.Errorf("%d log lines for %d refused connections", lines, n-ingressCap)
	}
	work(20, fmt.Sprintf("%d idle connections", n))
	report(fmt.Sprintf("%d idle connections (%d forwarded, %d closed by the parent)", n, ingressCap, n-ingressCap))
	if _, forwarded := sess.Streams(link.Ingress); forwarded != ingressCap {
		t.Errorf("%d ingress streams after the enclave's work, want %d", forwarded, ingressCap)
	}
	// Meanwhile a newcomer finds the port full: closed at once.
	if c, err := net.Dial("tcp", publicAddr); err == nil {
		if err := closedByServer(c); err != nil {
			t.Errorf("a newcomer during the flood: %v", err)
		}
		c.Close()
	}

	for _, c := range conns {
		c.Close()
	}
	conns = nil
	testenv.Eventually(t, 60*time.Second, "the ingress streams to close", func() bool {
		_, forwarded := sess.Streams(link.Ingress)
		return forwarded == 0
	})
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}
	resp, err := client.Get("http://" + publicAddr + "/")
	if err != nil {
		t.Fatalf("after the flood: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("after the flood: %s", resp.Status)
	}
}

// floodParent is the parent's process: it serves the link and forwards a
// public port, says where on stdout, and runs until stdin closes.
func floodParent(t *testing.T, dir string) {
	srv := &parent.Server{BlobDir: dir, Log: slog.New(slog.NewTextHandler(os.Stderr, nil))}
	ll, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Serve(ctx, ll)
	go srv.Forward(ctx, pl, 443)
	fmt.Printf("link=%s public=%s\n", ll.Addr(), pl.Addr())
	io.Copy(io.Discard, os.Stdin)
}

// startFloodParent starts the parent's process; it stops when the test
// ends.
func startFloodParent(t *testing.T) (linkAddr, publicAddr string, pid int, log *testenv.SyncBuffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestIdleFloodLeavesBackupsAndEgress$", "-test.count=1")
	cmd.Env = append(os.Environ(), floodParentEnv+"="+t.TempDir())
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	log = &testenv.SyncBuffer{}
	cmd.Stderr = log
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if _, err2 := fmt.Sscanf(line, "link=%s public=%s", &linkAddr, &publicAddr); err != nil || err2 != nil {
		t.Fatalf("the parent's process said %q (%v %v); its log:\n%s", line, err, err2, log)
	}
	go io.Copy(io.Discard, stdout)
	return linkAddr, publicAddr, cmd.Process.Pid, log
}

// closedCount is how many of conns the server has closed (a FIN waits to
// be read), peeked without blocking.
func closedCount(conns []*net.TCPConn) int {
	n := 0
	buf := make([]byte, 1)
	for _, c := range conns {
		raw, err := c.SyscallConn()
		if err != nil {
			continue
		}
		raw.Read(func(fd uintptr) bool {
			m, _, err := unix.Recvfrom(int(fd), buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
			if (m == 0 && err == nil) || err == unix.ECONNRESET {
				n++
			}
			return true
		})
	}
	return n
}

// rss is process pid's resident set size in bytes.
func rss(t *testing.T, pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS for process %d", pid)
	return 0
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2].Round(10 * time.Microsecond)
}

// echoServer echoes TCP on 127.0.0.1 until the test ends.
func echoServer(t *testing.T) (string, func()) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return l.Addr().String(), func() { l.Close() }
}
