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
	"os"
	"sync"
	"testing"

	"github.com/enclaved/enclaved/internal/regtest"
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
func RepoRoot() (string, error) { return regtest.RepoRoot() }
