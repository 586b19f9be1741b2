// Package crashpoint lets crash tests kill the process at a named point
// between two steps whose order matters for money (for example after a
// credit commits and before its container starts). Hit does nothing unless
// the environment variable ENCLAVED_CRASHPOINT names that point, in which
// case the process sends itself SIGKILL: no deferred code, no flush.
//
// It runs on both sides of the trust boundary; it can only stop the process.
package crashpoint

import (
	"os"
	"syscall"
)

// Env is the variable that arms a crash point.
const Env = "ENCLAVED_CRASHPOINT"

var armed = os.Getenv(Env)

// Hit kills the process if name is the armed crash point.
func Hit(name string) {
	if armed != "" && armed == name {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	}
}
