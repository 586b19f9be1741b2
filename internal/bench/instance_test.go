package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr/nip19"

	"github.com/enclaved/enclaved/internal/testenv"
	"github.com/enclaved/enclaved/store"
)

// binaries are the programs the harness runs, built from this tree.
type binaries struct {
	Enclaved, Load string
}

// build builds cmd/enclaved and cmd/enclaved-load into dir.
func build(t testing.TB, dir string) binaries {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	b := binaries{Enclaved: filepath.Join(dir, "enclaved"), Load: filepath.Join(dir, "enclaved-load")}
	for out, pkg := range map[string]string{b.Enclaved: "./cmd/enclaved", b.Load: "./cmd/enclaved-load"} {
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Dir = root
		if msg, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, msg)
		}
	}
	return b
}

// instance is an `enclaved dev` process.
type instance struct {
	cmd    *exec.Cmd
	dir    string
	log    string // its stderr
	Pubkey string
	Npub   string
	HTTP   string // host:port of its HTTP API
	pprof  string // host:port of its profiles
	Relay  string
	// DB is the instance's database, opened by the harness too (SQLite
	// WAL: two processes may share it) to seed records and watch states.
	DB       *store.DB
	exited   chan error
	stopOnce sync.Once
}

// ramDir is a fresh directory on a RAM disk when the machine has one (the
// enclave keeps its SQLite database on one), else under the test's temp dir.
func ramDir(t testing.TB, name string) string {
	t.Helper()
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		d, err := os.MkdirTemp("/dev/shm", "enclaved-bench-"+name+"-")
		if err == nil {
			t.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
	}
	return filepath.Join(t.TempDir(), name)
}

// startInstance runs bin as `enclaved dev` on relay and the shared regtest
// operator node, with sets applied, and returns once it printed its banner.
func startInstance(t testing.TB, bin, relay string, sets ...string) *instance {
	t.Helper()
	ln := testenv.Lightning(t)
	dir := ramDir(t, "instance")
	args := []string{"dev", "-data-dir", dir, "-relay", relay,
		"-lnd-grpc", ln.Operator.GRPCAddr, "-lnd-tls-cert", ln.Operator.TLSCertPath(), "-lnd-macaroon", ln.Operator.MacaroonPath("invoice"),
		"-http", "127.0.0.1:0", "-pprof", "127.0.0.1:0"}
	for _, s := range sets {
		args = append(args, "-set", s)
	}
	cmd := exec.Command(bin, args...)
	// Only what the instance needs: no ENCLAVED_* variable of the
	// harness's environment reaches its configuration.
	cmd.Env = []string{"HOME=" + dir, "PATH=" + os.Getenv("PATH")}
	if v := os.Getenv("DOCKER_HOST"); v != "" {
		cmd.Env = append(cmd.Env, "DOCKER_HOST="+v)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	logPath := filepath.Join(t.TempDir(), "instance.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	in := &instance{cmd: cmd, dir: dir, log: logPath, Relay: relay, exited: make(chan error, 1)}
	banner := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		told := false
		for sc.Scan() {
			k, v, _ := strings.Cut(strings.TrimSpace(sc.Text()), ":")
			v = strings.TrimSpace(v)
			switch k {
			case "npub":
				in.Npub = v
			case "http":
				if u, err := url.Parse(v); err == nil {
					in.HTTP = "127.0.0.1:" + u.Port()
				}
			case "pprof":
				if u, err := url.Parse(v); err == nil {
					in.pprof = u.Host
				}
			case "data dir":
				if !told {
					told = true
					banner <- nil
				}
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	go func() {
		err := cmd.Wait()
		logf.Close()
		in.exited <- err
		close(in.exited)
	}()
	t.Cleanup(func() { in.stop(t) })
	select {
	case <-banner:
	case err := <-in.exited:
		t.Fatalf("the instance exited (%v):\n%s", err, in.tail(30))
	case <-time.After(2 * time.Minute):
		t.Fatalf("the instance did not come up:\n%s", in.tail(30))
	}
	_, pk, err := nip19.Decode(in.Npub)
	if err != nil || in.HTTP == "" || in.pprof == "" {
		t.Fatalf("banner: npub %q, http %q, pprof %q", in.Npub, in.HTTP, in.pprof)
	}
	in.Pubkey = pk.(string)
	if in.DB, err = store.Open(context.Background(), filepath.Join(dir, "enclaved.db"), store.Options{}); err != nil {
		t.Fatal(err)
	}
	return in
}

// stop ends the instance (SIGTERM to its pid, then SIGKILL after 30 s) and
// closes the harness's handle on its database.
func (in *instance) stop(t testing.TB) {
	in.stopOnce.Do(func() {
		if in.DB != nil {
			in.DB.Close()
		}
		in.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-in.exited:
		case <-time.After(30 * time.Second):
			t.Errorf("the instance did not stop within 30 s; killing it")
			in.cmd.Process.Kill()
			<-in.exited
		}
	})
}

// tail is the end of the instance's log.
func (in *instance) tail(n int) string {
	b, _ := os.ReadFile(in.log)
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// rss returns the instance process's resident set now and at its peak, in
// bytes (/proc/PID/status VmRSS and VmHWM).
func (in *instance) rss(t testing.TB) (now, peak int64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", in.cmd.Process.Pid))
	if err != nil {
		t.Fatalf("instance RSS: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if k == "VmRSS" {
			now = kb << 10
		} else {
			peak = kb << 10
		}
	}
	return now, peak
}

// cpu is the instance process's user + system CPU time so far
// (/proc/PID/stat, in clock ticks of 10 ms).
func (in *instance) cpu(t testing.TB) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", in.cmd.Process.Pid))
	if err != nil {
		t.Fatalf("instance CPU: %v", err)
	}
	// Fields after the command's ")" : state is the 3rd field, utime
	// the 14th and stime the 15th.
	_, rest, _ := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if len(f) < 13 {
		t.Fatalf("instance CPU: %q", b)
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// profileCPU starts a CPU profile of the instance and returns the function
// that stops it and writes it to path ("" : no profile is taken).
func (in *instance) profileCPU(t testing.TB, path string) func() {
	t.Helper()
	if path == "" {
		return func() {}
	}
	in.pprofPost(t, "/debug/pprof/cpu/start", "")
	return func() { in.pprofPost(t, "/debug/pprof/cpu/stop", path) }
}

// profile profiles the instance's CPU (and, meanwhile, its blocking and
// mutex contention) and returns the function that stops it and writes
// cpu-NAME.pprof, block-NAME.pprof and mutex-NAME.pprof where prof says
// ("": no profile is taken). Block and mutex profiles are cumulative over
// the process: compare a phase's with the previous one's (pprof -base).
func (in *instance) profile(t testing.TB, prof func(string) string, name string) func() {
	t.Helper()
	stop := in.profileCPU(t, prof("cpu-"+name+".pprof"))
	return func() {
		stop()
		for _, kind := range []string{"block", "mutex"} {
			if path := prof(kind + "-" + name + ".pprof"); path != "" {
				resp, err := http.Get("http://" + in.pprof + "/debug/pprof/" + kind)
				if err != nil {
					t.Fatal(err)
				}
				writeBody(t, resp, path)
				resp.Body.Close()
			}
		}
	}
}

// heapProfile writes the instance's heap profile, after a GC, to path.
func (in *instance) heapProfile(t testing.TB, path string) {
	t.Helper()
	if path == "" {
		return
	}
	resp, err := http.Get("http://" + in.pprof + "/debug/pprof/heap?gc=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	writeBody(t, resp, path)
}

func (in *instance) pprofPost(t testing.TB, path, out string) {
	t.Helper()
	resp, err := http.Post("http://"+in.pprof+path, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s: %s %s", path, resp.Status, b)
	}
	if out != "" {
		writeBody(t, resp, out)
	}
}

func writeBody(t testing.TB, resp *http.Response, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.Copy(f, resp.Body); err != nil {
		t.Fatal(err)
	}
}

// loadResult is cmd/enclaved-load's JSON report (its Result).
type loadResult struct {
	Mode             string  `json:"mode"`
	Command          string  `json:"command"`
	Renters          int     `json:"renters"`
	Sent             int     `json:"sent"`
	Replies          int     `json:"replies"`
	Timeouts         int     `json:"timeouts"`
	Unexpected       int     `json:"unexpected"`
	FirstUnexpected  string  `json:"first_unexpected"`
	Errors           int     `json:"errors"`
	FirstError       string  `json:"first_error"`
	Seconds          float64 `json:"seconds"`
	PerSecond        float64 `json:"per_second"`
	ReplyRate        float64 `json:"reply_rate"`
	OfferedPerSecond float64 `json:"offered_per_second"`
	Latency          struct {
		P50, P90, P99, Max, Mean float64
	} `json:"latency_ms"`
	raw string
}

// load runs the load generator against the instance with args and returns
// its report; it fails the test if the generator fails.
func (in *instance) load(t testing.TB, bin string, args ...string) loadResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"-relay", in.Relay, "-to", in.Npub}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	inst0, self0, start := in.cpu(t), cpuTime(), time.Now()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("enclaved-load %v: %v\n%s", args, err, stderr.String())
	}
	// Who used the machine's cores meanwhile: the instance, this process
	// (the relay, mostly) and the load generator.
	cpu := fmt.Sprintf("CPU over %.1f s: instance %.2f s, harness (relay) %.2f s, load generator %.2f s",
		time.Since(start).Seconds(), (in.cpu(t) - inst0).Seconds(), (cpuTime() - self0).Seconds(),
		(cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds())
	var r loadResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("enclaved-load %v: %v in %q", args, err, out)
	}
	r.raw = strings.TrimSpace(stderr.String()) + "; " + cpu
	t.Logf("load: %s", r.raw)
	return r
}
