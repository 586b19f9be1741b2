package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every command that keeps files creates its directory, and when it
// cannot, it says which directory, why, and which setting moves it.
func TestCommandsSayWhenTheyCannotCreateTheirDir(t *testing.T) {
	file := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(file, "data")
	npub := "npub1lsu20lhje53fweek07xgqeu3rwx74uv2ak5gns8w7css7u2hx6dszvxxl7"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"dev", "-data-dir", bad}, "cannot create the data dir " + bad},
		{[]string{"dm", "-data-dir", bad, "-relay", "ws://127.0.0.1:1", npub, "help"}, "cannot create the data dir " + bad},
		{[]string{"dev", "zap", "-data-dir", bad, "-relay", "ws://127.0.0.1:1", "hello@localhost:1", "21"}, "cannot create the data dir " + bad},
		{[]string{"devnet", "-data-dir", bad}, "cannot create the data dir " + bad},
		{[]string{"keystore", "-data-dir", bad, "-relay", "ws://127.0.0.1:1"}, "cannot create the data dir " + bad},
		{[]string{"enclave", "-data-dir", bad, "-set", "nostr.relays=ws://127.0.0.1:1", "-set", "lightning.grpc=127.0.0.1:1"}, "cannot create the data dir " + bad},
		{[]string{"parent", "-data-dir", bad, "-listen", "127.0.0.1:0"}, "cannot create the blob dir " + filepath.Join(bad, "blobs")},
	} {
		err := run(context.Background(), tc.args, &bytes.Buffer{}, &bytes.Buffer{}, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "not a directory") {
			t.Errorf("enclaved %s: got %v, want an error saying %q and why", strings.Join(tc.args, " "), err, tc.want)
		}
	}
}

// A data dir others can write to is refused: they could plant or swap the
// instance's key or database.
func TestDataDirWritableByOthersIsRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	err := run(context.Background(), []string{"dev", "-data-dir", dir}, &bytes.Buffer{}, &bytes.Buffer{}, nil)
	if err == nil || !strings.Contains(err.Error(), "writable by every user") {
		t.Fatalf("got %v, want a refusal of the world-writable data dir", err)
	}
}
