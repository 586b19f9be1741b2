package regtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Tools returns the directory holding btcd, btcctl, lnd and lncli:
// $ENCLAVED_LIGHTNING_BIN, else the cache scripts/lightning-tools.sh fills.
func Tools() (string, error) {
	dir := os.Getenv("ENCLAVED_LIGHTNING_BIN")
	if dir == "" {
		script := ""
		if root, err := RepoRoot(); err == nil && root != "" {
			script = filepath.Join(root, "scripts", "lightning-tools.sh")
		}
		if _, err := os.Stat(script); script != "" && err == nil {
			out, err := exec.Command(script, "--print-dir").Output()
			if err != nil {
				return "", fmt.Errorf("scripts/lightning-tools.sh --print-dir: %w", err)
			}
			dir = strings.TrimSpace(string(out))
		} else if home, err := os.UserHomeDir(); err == nil {
			// Outside the repository: the newest build in the cache.
			found, _ := filepath.Glob(filepath.Join(home, ".cache", "enclaved", "tools", "*", "lnd"))
			var newest time.Time
			for _, f := range found {
				if fi, err := os.Stat(f); err == nil && fi.ModTime().After(newest) {
					newest, dir = fi.ModTime(), filepath.Dir(f)
				}
			}
		}
		if dir == "" {
			return "", errors.New("no btcd and lnd found: run `make tools` in the enclaved repository or set ENCLAVED_LIGHTNING_BIN")
		}
	}
	for _, bin := range []string{"btcd", "lnd"} {
		if _, err := os.Stat(filepath.Join(dir, bin)); err != nil {
			return "", fmt.Errorf("%s not found in %s: run `make tools` (builds btcd and lnd from the Go module proxy, about 5 minutes once)", bin, dir)
		}
	}
	return dir, nil
}

// RepoRoot returns the enclaved module's root directory (when run from
// inside the repository, as `make dev` and tests are).
func RepoRoot() (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return "", fmt.Errorf("find module root: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}
