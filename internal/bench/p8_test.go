package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/enclaved/enclaved/deployer"
	"github.com/enclaved/enclaved/internal/testenv"
	"github.com/enclaved/enclaved/records"
)

// p8MemFloor: P8 stops deploying once the machine has less memory
// available than this (MemAvailable), so that a full run never starves
// the other users of a shared machine.
const p8MemFloor = 3 << 30

// p8Workers renters deploy at once, each one container after the other.
const p8Workers = 4

var bolt11 = regexp.MustCompile(`lnbcrt[0-9a-z]+`)

// p8 counts the containers one instance runs at once. An instance of its
// own (fresh data dir) has p8Workers renters deploy and pay 1-unit
// containers, as renters do, until s.P8Max run, one does not start, the
// machine's available memory falls below p8MemFloor, s.P8Timeout passes or
// the run is interrupted (SIGINT, SIGTERM). It reads what they cost the
// instance (its RSS idle, and with all of them running after a metering
// pass over them) and the machine, then stops the instance and removes
// every container and network it made, also when interrupted; the objects
// of a run that was killed outright are removed by the next run.
func p8(t testing.TB, bins binaries, relay string, s sizes, img testenv.Image, heapProfile string, d *details) []row {
	t.Helper()
	ctx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopSignals()
	ctx, cancel := context.WithTimeout(ctx, s.P8Timeout)
	defer cancel()
	sweepP8(t)
	in := startInstance(t, bins.Enclaved, relay,
		"nostr.commands_per_minute=1000000", "instance.capacity_units=10000",
		"pricing.open_quotes=10000000", "pricing.open_quotes_per_sender=1000000")
	unmark := markP8(t, in.Pubkey)
	defer func() {
		in.stop(t)
		start := time.Now()
		n := removeContainers(t, in.Pubkey)
		d.line("P8: removed %d containers and their networks in %v", n, time.Since(start).Round(time.Second))
		unmark()
	}()
	testenv.NewClient(t, relay).Ask(t, "nip17", in.Pubkey, "help")
	idle, _ := in.rss(t)
	mem0, cpu0 := memAvailable(t), in.cpu(t)
	payer := testenv.Lightning(t).Payer
	pay := func(ctx context.Context, bolt11 string) error { _, err := payer.Pay(ctx, bolt11); return err }
	clients := make([]*testenv.Client, min(p8Workers, s.P8Max))
	for i := range clients {
		clients[i] = testenv.NewClient(t, relay)
	}

	var (
		mu      sync.Mutex
		next    int
		stop    string
		started []time.Duration // payment → running, in order
		last    time.Time       // when the last one ran
	)
	// A halt lets the deploys under way finish; only the deadline and a
	// signal cut them short.
	halt := func(reason string) {
		mu.Lock()
		defer mu.Unlock()
		if stop == "" {
			stop = reason
		}
	}
	begin := time.Now()
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Go(func() {
			for {
				if avail := memAvailable(t); avail < p8MemFloor {
					halt(fmt.Sprintf("the machine's available memory fell to %d MiB (floor %d MiB)", avail>>20, p8MemFloor>>20))
					return
				}
				mu.Lock()
				i, halted := next, stop != ""
				next++
				mu.Unlock()
				if halted {
					return
				}
				if i >= s.P8Max {
					halt("the cap of this run")
					return
				}
				took, err := deployOne(ctx, t, c, pay, in.Pubkey, img.Ref, fmt.Sprintf("p8-%d", i))
				if ctx.Err() != nil {
					halt(fmt.Sprintf("%v after %v", context.Cause(ctx), time.Since(begin).Round(time.Second)))
					return
				}
				if err != nil {
					halt(err.Error())
					return
				}
				mu.Lock()
				started, last = append(started, took), time.Now()
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(begin)

	// The engine's count is the figure; the records must agree.
	n := 0
	list, err := dockerRuntime(t).List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range list {
		if c.Running && c.Labels[deployer.LabelInstance] == in.Pubkey {
			n++
		}
	}
	recs, err := records.New(in.DB, time.Now).InState(context.Background(), records.StateRunning)
	if err != nil {
		t.Fatal(err)
	}
	interrupted := ctx.Err() != nil // deploys cut short may have started since
	if !interrupted && (len(recs) != n || n != len(started)) {
		t.Errorf("P8: the engine runs %d of the instance's containers, its records say %d run, %d were told running", n, len(recs), len(started))
	}
	if n == 0 {
		t.Fatalf("P8: no container ran (%s)", stop)
	}
	if s.P6WaitTick && !interrupted {
		waitBeat(t, in, last)
	}
	end, peak := in.rss(t)
	in.heapProfile(t, heapProfile)
	mem1 := memAvailable(t)
	per := float64(end-idle) / float64(n)

	d.line("P8: %d containers running at once after %v; stopped by: %s", n, elapsed.Round(time.Second), stop)
	d.line("P8: enclaved's CPU meanwhile %.1f s (%.0f ms per container)", (in.cpu(t) - cpu0).Seconds(), ms((in.cpu(t)-cpu0)/time.Duration(n)))
	d.line("P8: payment → running, median of the first %d %v, of the last %d %v", min(n, 20), median(started[:min(n, 20)]),
		min(n, 20), median(started[max(0, n-20):]))
	d.line("P8: enclaved RSS idle %.1f MB, with %d running %.1f MB (peak %.1f MB): %.1f KB each", float64(idle)/1e6, n,
		float64(end)/1e6, float64(peak)/1e6, per/1e3)
	d.line("P8: the machine's available memory %d MiB before, %d MiB after: %.1f MiB per container (shim, process, engine); %s; dockerd RSS %s",
		mem0>>20, mem1>>20, float64(mem0-mem1)/float64(n)/(1<<20), loadavg(), dockerdRSS())
	return []row{
		{ID: "P8", Measure: "containers running at once on one instance (1 unit each, deployed and paid as renters do)",
			Goal: "≥ 1000", Unit: "containers", Measured: float64(n), Checked: true, Pass: n >= goalP8},
		{ID: "P8", Measure: fmt.Sprintf("enclaved RSS with those %d running (informative)", n), Goal: "–", Unit: "MB", Measured: float64(end) / 1e6},
		{ID: "P8", Measure: "enclaved RSS per running container, (that − idle) ÷ count (informative)", Goal: "–", Unit: "KB", Measured: per / 1e3},
	}
}

// deployOne deploys container name as a renter does (a deploy DM, then
// paying the quote's invoice) and returns the time from the payment to
// the instance's notice that it runs; an error if it does not.
func deployOne(ctx context.Context, t testing.TB, c *testenv.Client, pay func(context.Context, string) error, to, ref, name string) (time.Duration, error) {
	id := c.Send(t, "nip17", to, fmt.Sprintf("deploy %s name=%s hours=3", ref, name))
	q, err := awaitReply(ctx, c, func(r testenv.Reply) bool { return r.RefersTo(id) })
	if err != nil {
		return 0, fmt.Errorf("%s: no quote: %w", name, err)
	}
	inv := bolt11.FindString(q.Text)
	if inv == "" {
		return 0, fmt.Errorf("%s: no quote: %q", name, firstLine(q.Text))
	}
	start := time.Now()
	if err := pay(ctx, inv); err != nil {
		return 0, fmt.Errorf("%s: paying: %w", name, err)
	}
	r, err := awaitReply(ctx, c, func(r testenv.Reply) bool {
		return strings.HasPrefix(r.Text, name+" is running") || strings.HasPrefix(r.Text, name+" could not be started") ||
			strings.HasPrefix(r.Text, name+" is paid")
	})
	if err != nil {
		return 0, fmt.Errorf("%s: not running: %w", name, err)
	}
	if !strings.HasPrefix(r.Text, name+" is running") {
		return 0, errors.New(firstLine(r.Text))
	}
	return time.Since(start), nil
}

// awaitReply returns the client's first reply that matches, skipping
// others, within five minutes.
func awaitReply(ctx context.Context, c *testenv.Client, match func(testenv.Reply) bool) (testenv.Reply, error) {
	timeout := time.NewTimer(5 * time.Minute)
	defer timeout.Stop()
	for {
		select {
		case r := <-c.Replies():
			if match(r) {
				return r, nil
			}
		case <-ctx.Done():
			return testenv.Reply{}, context.Cause(ctx)
		case <-timeout.C:
			return testenv.Reply{}, errors.New("no reply within 5 min")
		}
	}
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// memAvailable is the machine's MemAvailable, in bytes.
func memAvailable(t testing.TB) int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Errorf("meminfo: %v", err)
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "MemAvailable:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// loadavg is the machine's load and tasks (/proc/loadavg), in words.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if err != nil || len(f) < 4 {
		return "load unknown"
	}
	return fmt.Sprintf("load %s %s %s, tasks running/total %s", f[0], f[1], f[2], f[3])
}

// dockerdRSS is the RSS of the engine's process, when this machine runs it
// and lets it be read.
func dockerdRSS() string {
	dirs, _ := filepath.Glob("/proc/[0-9]*/comm")
	for _, p := range dirs {
		if b, err := os.ReadFile(p); err != nil || strings.TrimSpace(string(b)) != "dockerd" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(filepath.Dir(p), "status"))
		if err != nil {
			break
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				return strings.TrimSpace(v)
			}
		}
	}
	return "unknown"
}

// p8Marks holds a file per P8 run under way, named after its instance and
// holding the harness's pid: a run killed outright (SIGKILL) leaves its
// containers behind, and the next run removes them.
func p8Marks() string { return filepath.Join(os.TempDir(), "enclaved-bench-p8") }

// markP8 notes that this process runs P8 with instance, until the
// returned function is called (once its containers are removed).
func markP8(t testing.TB, instance string) func() {
	t.Helper()
	if err := os.MkdirAll(p8Marks(), 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(p8Marks(), instance)
	if err := os.WriteFile(path, []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		t.Fatal(err)
	}
	return func() { os.Remove(path) }
}

// sweepP8 removes the containers and networks of P8 runs whose process is
// gone.
func sweepP8(t testing.TB) {
	t.Helper()
	entries, _ := os.ReadDir(p8Marks())
	for _, e := range entries {
		path := filepath.Join(p8Marks(), e.Name())
		b, err := os.ReadFile(path)
		pid, perr := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || perr != nil || len(e.Name()) != 64 {
			continue
		}
		if err := syscall.Kill(pid, 0); err == nil || errors.Is(err, syscall.EPERM) || pid == os.Getpid() {
			continue // still running: another run of the suite
		}
		n := removeContainers(t, e.Name())
		t.Logf("P8: removed %d containers left by a killed run (instance %s)", n, e.Name())
		os.Remove(path)
	}
}

// TestBenchP8 runs P8 alone (make bench-p8, which sets ENCLAVED_BENCH_P8
// and the full sizes); TestBench runs it with the rest.
func TestBenchP8(t *testing.T) {
	if os.Getenv("ENCLAVED_BENCH_P8") == "" {
		t.Skip("P8 alone runs with make bench-p8; TestBench runs it with the rest")
	}
	s := smoke
	if os.Getenv("ENCLAVED_BENCH") == "full" {
		s = full
	}
	relay := testenv.Relay(t)
	imgs := testenv.Images(t)
	testenv.Lightning(t)
	bins := build(t, t.TempDir())
	d := &details{}
	report(t, s, p8(t, bins, relay.URL, s, imgs.Hello, "", d), d)
}
