package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/enclaved/enclaved/internal/proc"
	"github.com/enclaved/enclaved/internal/regtest"
	"github.com/enclaved/enclaved/internal/testenv"
)

// The README's quick start, run as written by a newcomer: from a copy of
// the checkout and an empty HOME (no data dir, no keys), with only the
// Lightning tools and Go's caches already on the machine. Every `$ ` line of
// the section is typed into a shell and what follows it must be printed;
// a block with no `$ ` line is more output of the command still running
// before it. So the README cannot change without this test following, and
// the commands cannot change without the README following.
func TestReadmeQuickStart(t *testing.T) {
	testenv.Docker(t)
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	steps, err := quickStartSteps(string(readme))
	if err != nil {
		t.Fatalf("README quick start: %v", err)
	}
	// The section must keep walking the whole path the issue asks for.
	var cmds []string
	for _, s := range steps {
		cmds = append(cmds, s.cmd)
	}
	all := strings.Join(cmds, "\n")
	for _, want := range []string{"make dev", " help", " deploy <demo>", "dev pay <invoice>", " status hello", "dev zap hello@", "curl ", " logs hello", " stop hello"} {
		if !strings.Contains(all, want) {
			t.Fatalf("the README quick start no longer runs %q; its commands:\n%s", want, all)
		}
	}
	// make dev listens on fixed ports, as the README says.
	for _, addr := range []string{"127.0.0.1:7447", "127.0.0.1:7448", "127.0.0.1:8080"} {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("%s is taken, but the quick start's instance listens there: %v", addr, err)
		}
		l.Close()
	}

	home := t.TempDir()
	w := &walker{t: t, dir: copyCheckout(t, root), env: newcomerEnv(t, home), caps: map[string]string{}}
	t.Cleanup(func() {
		w.finish()
		dataDir := filepath.Join(home, ".enclaved")
		if _, err := os.Stat(filepath.Join(dataDir, "enclaved.db")); err == nil {
			var ids []string
			rows, err := openRO(t, dataDir).Query(`SELECT id FROM containers`)
			if err == nil {
				for rows.Next() {
					var id string
					rows.Scan(&id)
					ids = append(ids, id)
				}
				rows.Close()
			}
			for _, id := range ids {
				removeAll(t, id)
			}
		}
	})
	start := time.Now()
	for i, s := range steps {
		w.run(i+1, s)
		switch {
		case s.cmd == "make dev":
			t.Logf("make dev → instance up: %s", time.Since(start).Round(10*time.Millisecond))
		case strings.HasSuffix(s.cmd, " help") && !w.timed["help"]:
			w.timed["help"] = true
			t.Logf("make dev → first reply (help): %s", time.Since(start).Round(10*time.Millisecond))
		case s.cmd == "" && strings.Contains(strings.Join(s.expect, "\n"), " is running."):
			t.Logf("make dev → paid container running: %s", time.Since(start).Round(10*time.Millisecond))
		}
	}
	// What make dev created in the empty HOME is its owner's alone.
	for _, d := range []string{".enclaved", ".enclaved/regtest"} {
		fi, err := os.Stat(filepath.Join(home, d))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o700 {
			t.Errorf("~/%s has mode %04o, want 0700", d, fi.Mode().Perm())
		}
	}
}

// step is one command of the quick start and what it prints; cmd is ""
// for more output of the command still running before it.
type step struct {
	cmd    string
	expect []string
}

// quickStartSteps reads the steps of the README's "## Quick start" section:
// its indented blocks, split at each `$ ` line.
func quickStartSteps(readme string) ([]step, error) {
	_, sec, ok := strings.Cut(readme, "\n## Quick start\n")
	if !ok {
		return nil, errors.New(`no "## Quick start" section`)
	}
	if i := strings.Index(sec, "\n## "); i >= 0 {
		sec = sec[:i]
	}
	var steps []step
	var block []string
	flush := func() {
		for len(block) > 0 && block[len(block)-1] == "" {
			block = block[:len(block)-1]
		}
		if len(block) == 0 {
			return
		}
		if !strings.HasPrefix(block[0], "$ ") {
			steps = append(steps, step{})
		}
		for _, l := range block {
			if c, ok := strings.CutPrefix(l, "$ "); ok {
				steps = append(steps, step{cmd: c})
				continue
			}
			steps[len(steps)-1].expect = append(steps[len(steps)-1].expect, l)
		}
		for i := range steps {
			for len(steps[i].expect) > 0 && steps[i].expect[len(steps[i].expect)-1] == "" {
				steps[i].expect = steps[i].expect[:len(steps[i].expect)-1]
			}
		}
		block = nil
	}
	for _, l := range strings.Split(sec, "\n") {
		l = strings.TrimRight(l, " \t")
		switch {
		case strings.HasPrefix(l, "    "):
			block = append(block, l[4:])
		case l == "" && len(block) > 0:
			block = append(block, "")
		default:
			flush()
		}
	}
	flush()
	if len(steps) == 0 || steps[0].cmd == "" {
		return nil, errors.New("it does not start with a command")
	}
	return steps, nil
}

// walker types the quick start's commands, each into its own shell as a
// newcomer's terminals would, and matches what they print.
type walker struct {
	t     *testing.T
	dir   string   // the checkout
	env   []string // the newcomer's environment
	caps  map[string]string
	timed map[string]bool
	// procs are the commands started, in order; left are those still
	// running when their output was matched (make dev, a deploy waiting
	// for its payment).
	procs []*shellProc
	left  []*shellProc
}

type shellProc struct {
	line string
	cmd  *exec.Cmd
	out  *lineBuffer
	pos  int // lines matched so far
	done chan struct{}
	err  error
}

func (w *walker) run(n int, s step) {
	t := w.t
	t.Helper()
	if w.timed == nil {
		w.timed = map[string]bool{}
	}
	timeout := 2 * time.Minute
	// The commands whose output this step is: the one it types, or, for a
	// block with no command, any left running (the README says which
	// terminal in words; the output tells).
	var cands []*shellProc
	if s.cmd != "" {
		line, err := expand(s.cmd, w.caps)
		if err != nil {
			t.Fatalf("step %d (%s): %v", n, s.cmd, err)
		}
		if s.cmd == "make dev" {
			timeout = 10 * time.Minute // a build, and a regtest network
		}
		cands = []*shellProc{w.start(line)}
	} else {
		cands = slices.Clone(w.left)
		slices.Reverse(cands)
		if len(cands) == 0 {
			t.Fatalf("step %d: output with no command still running", n)
		}
	}
	deadline := time.After(timeout)
	var p *shellProc
	for p == nil {
		wake := make(chan struct{}, 1)
		for _, c := range cands {
			go func(ch <-chan struct{}, done chan struct{}) {
				select {
				case <-ch:
				case <-done:
				}
				select {
				case wake <- struct{}{}:
				default:
				}
			}(c.out.changed(), c.done)
		}
		ended := true
		for _, c := range cands {
			final := isDone(c.done)
			ended = ended && final
			if k, caps, ok := matchLines(c.out.lines(final)[c.pos:], s.expect, w.caps); ok {
				c.pos += k
				w.caps = caps
				p = c
				break
			}
		}
		if p != nil {
			break
		}
		if ended {
			t.Fatalf("step %d: %s ended without printing what the README says.\nREADME:\n%s\nprinted:\n%s",
				n, describe(cands), strings.Join(s.expect, "\n"), unmatched(cands))
		}
		select {
		case <-wake:
		case <-deadline:
			t.Fatalf("step %d: %s did not print within %s what the README says.\nREADME:\n%s\nprinted:\n%s",
				n, describe(cands), timeout, strings.Join(s.expect, "\n"), unmatched(cands))
		}
	}
	if s.cmd != "" {
		w.left = append(w.left, p)
	}
	// Commands that ended with all their output read are done with; one
	// that failed fails the quick start, whatever it printed.
	for _, q := range slices.Clone(w.left) {
		if isDone(q.done) && q.pos == len(q.out.lines(true)) {
			if q.err != nil {
				t.Fatalf("step %d: `%s` printed what the README says but failed: %v\n%s", n, q.line, q.err, q.out.String())
			}
			w.left = removeProc(w.left, q)
		}
	}
}

func describe(ps []*shellProc) string {
	var names []string
	for _, p := range ps {
		names = append(names, "`"+p.line+"`")
	}
	return strings.Join(names, " or ")
}

func unmatched(ps []*shellProc) string {
	var sb strings.Builder
	for _, p := range ps {
		fmt.Fprintf(&sb, "[%s]\n%s\n", p.line, strings.Join(p.out.lines(true)[p.pos:], "\n"))
	}
	return sb.String()
}

func (w *walker) start(line string) *shellProc {
	cmd := exec.Command("sh", "-c", line)
	cmd.Dir, cmd.Env = w.dir, w.env
	// Its own process group, as a terminal's job: Ctrl-C reaches all of it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p := &shellProc{line: line, cmd: cmd, out: &lineBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		w.t.Fatalf("%s: %v", line, err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	w.procs = append(w.procs, p)
	return p
}

// finish waits for the commands that should end by themselves, then
// presses Ctrl-C in the instance's terminal and waits until it let go of
// its ports.
func (w *walker) finish() {
	t := w.t
	for _, p := range w.procs[min(1, len(w.procs)):] {
		select {
		case <-p.done:
			if p.err != nil && !t.Failed() {
				t.Errorf("`%s` failed: %v\n%s", p.line, p.err, p.out.String())
			}
		case <-time.After(30 * time.Second):
			syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
			if !t.Failed() {
				t.Errorf("`%s` did not end after printing its output:\n%s", p.line, p.out.String())
			}
		}
	}
	if len(w.procs) == 0 {
		return
	}
	dev := w.procs[0]
	syscall.Kill(-dev.cmd.Process.Pid, syscall.SIGINT)
	select {
	case <-dev.done:
	case <-time.After(time.Minute):
		syscall.Kill(-dev.cmd.Process.Pid, syscall.SIGKILL)
		<-dev.done
		t.Errorf("make dev did not stop on Ctrl-C")
	}
	if t.Failed() {
		t.Logf("make dev printed:\n%s", dev.out.String())
	}
	err := proc.WaitFor(context.Background(), "the instance's ports free", time.Minute, func(context.Context) (bool, error) {
		for _, addr := range []string{"127.0.0.1:7447", "127.0.0.1:7448", "127.0.0.1:8080"} {
			l, err := net.Listen("tcp", addr)
			if err != nil {
				return false, err
			}
			l.Close()
		}
		return true, nil
	})
	if err != nil {
		t.Errorf("after Ctrl-C: %v", err)
	}
}

func removeProc(ps []*shellProc, p *shellProc) []*shellProc {
	out := ps[:0]
	for _, q := range ps {
		if q != p {
			out = append(out, q)
		}
	}
	return out
}

func isDone(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// placeholderRE finds `<name>`s and `…` in a README line.
var placeholderRE = regexp.MustCompile(`<([a-z][a-z0-9_]*)>|…`)

// expand replaces each <name> of a command by the value shown earlier.
func expand(cmd string, caps map[string]string) (string, error) {
	var missing []string
	out := placeholderRE.ReplaceAllStringFunc(cmd, func(m string) string {
		name := strings.Trim(m, "<>")
		v, ok := caps[name]
		if !ok {
			missing = append(missing, m)
		}
		return v
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("%s shown nowhere before", strings.Join(missing, ", "))
	}
	return out, nil
}

// matchLines matches the start of lines against pats: a pattern line "…"
// stands for any number of lines; in others "…" stands for any text and
// <name> for one word, which is the value shown before under that name (or
// the literal <name>), or else is captured as that value. It returns how
// many lines matched and the captures.
func matchLines(lines, pats []string, caps map[string]string) (int, map[string]string, bool) {
	if len(pats) == 0 {
		return 0, caps, true
	}
	if pats[0] == "…" {
		for k := 0; k <= len(lines); k++ {
			if n, c, ok := matchLines(lines[k:], pats[1:], caps); ok {
				return k + n, c, true
			}
		}
		return 0, nil, false
	}
	if len(lines) == 0 {
		return 0, nil, false
	}
	re, names := linePattern(pats[0], caps)
	m := re.FindStringSubmatch(strings.TrimRight(lines[0], " \t\r"))
	if m == nil {
		return 0, nil, false
	}
	next := caps
	if len(names) > 0 {
		next = make(map[string]string, len(caps)+len(names))
		for k, v := range caps {
			next[k] = v
		}
		for i, name := range names {
			if v := m[i+1]; v != "<"+name+">" {
				next[name] = v
			}
		}
	}
	n, c, ok := matchLines(lines[1:], pats[1:], next)
	return n + 1, c, ok
}

func linePattern(pat string, caps map[string]string) (*regexp.Regexp, []string) {
	var sb strings.Builder
	var names []string
	sb.WriteString("^")
	last := 0
	for _, loc := range placeholderRE.FindAllStringSubmatchIndex(pat, -1) {
		sb.WriteString(regexp.QuoteMeta(pat[last:loc[0]]))
		last = loc[1]
		if loc[2] < 0 {
			sb.WriteString(".*")
			continue
		}
		name := pat[loc[2]:loc[3]]
		literal := regexp.QuoteMeta("<" + name + ">")
		if v, ok := caps[name]; ok {
			sb.WriteString("(?:" + regexp.QuoteMeta(v) + "|" + literal + ")")
		} else if slices.Contains(names, name) {
			sb.WriteString(`\S+`)
		} else {
			names = append(names, name)
			sb.WriteString(`(\S+)`)
		}
	}
	sb.WriteString(regexp.QuoteMeta(pat[last:]))
	sb.WriteString("$")
	return regexp.MustCompile(sb.String()), names
}

// lineBuffer collects a command's output (stdout and stderr, as a
// terminal shows them) and wakes whoever waits for more.
type lineBuffer struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	wake chan struct{}
}

func (b *lineBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	if b.wake != nil {
		close(b.wake)
		b.wake = nil
	}
	return len(p), nil
}

// changed is closed at the next write.
func (b *lineBuffer) changed() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.wake == nil {
		b.wake = make(chan struct{})
	}
	return b.wake
}

// lines are the complete lines so far, and the last partial one if final.
func (b *lineBuffer) lines(final bool) []string {
	b.mu.Lock()
	s := b.buf.String()
	b.mu.Unlock()
	if !final {
		if i := strings.LastIndexByte(s, '\n'); i >= 0 {
			s = s[:i+1]
		} else {
			s = ""
		}
	}
	s = strings.TrimSuffix(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func (b *lineBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// copyCheckout copies the repository's files (tracked, and new ones not
// ignored) into a fresh directory: a newcomer's clone, with no bin/.
func copyCheckout(t *testing.T, root string) string {
	t.Helper()
	out, err := exec.Command("git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	dst := filepath.Join(t.TempDir(), "enclaved")
	for _, f := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		src := filepath.Join(root, f)
		fi, err := os.Lstat(src)
		if errors.Is(err, os.ErrNotExist) {
			continue // deleted, not yet committed
		}
		if err != nil {
			t.Fatal(err)
		}
		to := filepath.Join(dst, f)
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			t.Fatal(err)
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			target, err := os.Readlink(src)
			if err == nil {
				err = os.Symlink(target, to)
			}
			if err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := copyFile(src, to, fi.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// newcomerEnv is this machine's environment with HOME empty: what a new
// user has, plus Go's caches and the Lightning tools already built (the
// quick start's "about 5 minutes the first time" is not repeated per test).
func newcomerEnv(t *testing.T, home string) []string {
	t.Helper()
	goVars := []string{"GOCACHE", "GOMODCACHE", "GOPATH", "GOPROXY", "GOSUMDB", "GONOSUMDB", "GONOPROXY", "GOPRIVATE", "GOINSECURE", "GOFLAGS", "GOTOOLCHAIN"}
	out, err := exec.Command("go", append([]string{"env", "-json"}, goVars...)...).Output()
	if err != nil {
		t.Fatalf("go env: %v", err)
	}
	var goEnv map[string]string
	if err := json.Unmarshal(out, &goEnv); err != nil {
		t.Fatal(err)
	}
	tools, err := regtest.Tools()
	if err != nil {
		t.Fatal(err)
	}
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "HOME" || strings.HasPrefix(k, "ENCLAVED_") || strings.HasPrefix(k, "XDG_") || goEnv[k] != "" {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "HOME="+home, "ENCLAVED_TOOLS="+filepath.Dir(tools))
	for _, k := range goVars {
		if v := goEnv[k]; v != "" {
			env = append(env, k+"="+v)
		}
	}
	return env
}
