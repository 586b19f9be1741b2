package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// `enclaved parent launch` hands the configured enclave to nitro-cli. The
// Nitro hypervisor cannot run here: a stand-in nitro-cli records what it
// was asked, which is what the real one parses.
func TestParentLaunch(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "enclaved.toml")
	os.WriteFile(cfgFile, []byte(`[parent]
eif = "/opt/enclaved/enclaved.eif"
enclave_cpus = 4
enclave_memory_mib = 8192
enclave_cid = 23
`), 0o600)
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"parent", "launch", "-config", cfgFile, "-dry-run"}, &out, &errb, nil); err != nil {
		t.Fatal(err, errb.String())
	}
	want := "nitro-cli run-enclave --eif-path /opt/enclaved/enclaved.eif --cpu-count 4 --memory 8192 --enclave-cid 23\n"
	if out.String() != want {
		t.Errorf("dry run printed %q, want %q", out.String(), want)
	}

	// Debug mode is passed on (its PCRs read as zeros: verify refuses it).
	out.Reset()
	run(context.Background(), []string{"parent", "launch", "-config", cfgFile, "-set", "parent.enclave_debug=true", "-dry-run"}, &out, &errb, nil)
	if !strings.HasSuffix(out.String(), " --debug-mode\n") {
		t.Errorf("debug launch: %q", out.String())
	}

	err := run(context.Background(), []string{"parent", "launch", "-config", cfgFile, "-nitro-cli", "no-such-nitro-cli"}, &out, &errb, nil)
	if err == nil || !strings.Contains(err.Error(), "no-such-nitro-cli not found: install aws-nitro-enclaves-cli") {
		t.Errorf("without nitro-cli: %v", err)
	}

	record := filepath.Join(dir, "args")
	stand := filepath.Join(dir, "nitro-cli")
	os.WriteFile(stand, []byte("#!/bin/sh\necho \"$@\" > "+record+"\necho '{\"EnclaveCID\": 23}'\n"), 0o755)
	out.Reset()
	if err := run(context.Background(), []string{"parent", "launch", "-config", cfgFile, "-nitro-cli", stand}, &out, &errb, nil); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(record)
	if string(got) != strings.TrimPrefix(want, "nitro-cli ") {
		t.Errorf("nitro-cli was given %q", got)
	}
	if !strings.Contains(out.String(), `"EnclaveCID": 23`) {
		t.Errorf("nitro-cli's answer was not printed: %q", out.String())
	}

	for _, bad := range []string{"parent.enclave_cid=3", "parent.enclave_cpus=0"} {
		err := run(context.Background(), []string{"parent", "launch", "-config", cfgFile, "-set", bad, "-dry-run"}, &out, &errb, nil)
		if err == nil {
			t.Errorf("-set %s accepted", bad)
		}
	}
}
