package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// ensureDir makes sure dir exists as a directory only its owner can write:
// it is created (with its parents) mode 0700 when missing, so a first run on
// a fresh machine needs no preparation. what names it and key the setting
// that moves it, in the error that says why it cannot be used.
func ensureDir(dir, what, key string) error {
	if dir == "" {
		return fmt.Errorf("no %s: set %s", what, key)
	}
	hint := "; set " + key + " to a directory you can write"
	if err := os.MkdirAll(dir, 0o700); err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = fmt.Errorf("%s %s: %w", pe.Op, pe.Path, pe.Err)
		}
		return fmt.Errorf("cannot create the %s %s (%v)%s", what, dir, err, hint)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("the %s %s: %w%s", what, dir, err, hint)
	}
	if fi.Mode().Perm()&0o002 != 0 {
		return fmt.Errorf("the %s %s is writable by every user (mode %04o), so others could plant or swap its files: chmod 700 it, or set %s elsewhere",
			what, dir, fi.Mode().Perm(), key)
	}
	return nil
}
