package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"

	"github.com/enclaved/enclaved/config"
)

// launchArgs are nitro-cli's arguments for the configured enclave.
func launchArgs(cfg config.Config) []string {
	args := []string{"run-enclave",
		"--eif-path", cfg.Parent.EIF,
		"--cpu-count", strconv.FormatInt(cfg.Parent.EnclaveCPUs, 10),
		"--memory", strconv.FormatInt(cfg.Parent.EnclaveMemoryMB, 10),
		"--enclave-cid", strconv.FormatInt(cfg.Parent.EnclaveCID, 10),
	}
	if cfg.Parent.EnclaveDebug {
		args = append(args, "--debug-mode")
	}
	return args
}

// runLaunch starts the enclave with nitro-cli on this EC2 host.
func runLaunch(ctx context.Context, args []string, stdout, stderr io.Writer, environ []string) error {
	fs := newFlagSet("parent launch", `Starts the enclave: nitro-cli run-enclave with parent.eif, parent.enclave_cpus,
parent.enclave_memory_mib, parent.enclave_cid and parent.enclave_debug. Run it
on the EC2 host, next to a running "enclaved parent" (the enclave dials it at
CID 3). nitro-cli prints the enclave's id and CID.`, stderr)
	load := configFlags(fs, environ)
	dry := fs.Bool("dry-run", false, "print the nitro-cli command instead of running it")
	nitro := fs.String("nitro-cli", "nitro-cli", "the nitro-cli binary")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := load()
	if err != nil {
		return err
	}
	a := launchArgs(cfg)
	if *dry {
		fmt.Fprintln(stdout, *nitro, strings.Join(a, " "))
		return nil
	}
	path, err := exec.LookPath(*nitro)
	if errors.Is(err, exec.ErrNotFound) {
		return fmt.Errorf("%s not found: install aws-nitro-enclaves-cli on an EC2 host with enclaves enabled (or pass -nitro-cli)", *nitro)
	} else if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, path, a...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("nitro-cli run-enclave: %w", err)
	}
	return nil
}
