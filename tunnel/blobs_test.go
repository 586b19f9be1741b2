package tunnel_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/enclaved/enclaved/internal/testenv"
	"github.com/enclaved/enclaved/parent"
	"github.com/enclaved/enclaved/tunnel"
)

// blobParent is a parent holding blobs of at most maxBlob bytes, and the
// enclave's blob store over the link to it.
func blobParent(t *testing.T, maxBlob int64, pace tunnel.Pace) (string, tunnel.Blobs) {
	t.Helper()
	dir := t.TempDir()
	k := testenv.ParentLink(t, &parent.Server{BlobDir: dir, MaxBlob: maxBlob, LogOut: io.Discard}, nil)
	return dir, tunnel.Blobs{Link: k, Pace: pace}
}

// A blob over the parent's limit fails as soon as it is over, naming the
// limit: the parent resets the stream, so the enclave's writer, waiting
// for credit the parent no longer grants, does not hang. Nothing is
// stored, the link goes on, and a blob of exactly the limit is stored.
func TestBlobOverParentLimitFailsAtOnce(t *testing.T) {
	const limit = 64 << 10
	dir, blobs := blobParent(t, limit, tunnel.Pace{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := blobs.Put(ctx, "big", bytes.NewReader(make([]byte, 4<<20)))
	if err == nil || !strings.Contains(err.Error(), "blob over 65536 bytes, the parent's limit") {
		t.Fatalf("a 4 MiB blob over a 64 KiB limit: %v", err)
	}
	if ctx.Err() != nil {
		t.Fatalf("the put ended only with the test's deadline: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "big")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused blob was stored: %v", err)
	}
	if err := blobs.Put(ctx, "full", bytes.NewReader(make([]byte, limit))); err != nil {
		t.Fatalf("a blob of exactly the limit: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "full")); err != nil || fi.Size() != limit {
		t.Errorf("the blob of the limit at the parent: %v", err)
	}
}

// A put whose source stalls, and a get whose parent stalls (its blob is a
// FIFO nobody writes to), each end with their deadline, not the test's;
// the stalled put is not stored.
func TestBlobStallHitsDeadline(t *testing.T) {
	dir, blobs := blobParent(t, 0, tunnel.Pace{Timeout: 200 * time.Millisecond, Rate: 1 << 20})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	pr, pw := io.Pipe()
	defer pr.Close()
	go pw.Write([]byte("the first bytes, then nothing"))
	err := blobs.Put(ctx, "stalled", pr)
	var de *tunnel.DeadlineError
	if !errors.As(err, &de) || !errors.Is(err, os.ErrDeadlineExceeded) || ctx.Err() != nil {
		t.Fatalf("stalled put: %v", err)
	}
	if de.Blob != "stalled" || de.Bytes != int64(len("the first bytes, then nothing")) {
		t.Errorf("deadline error %+v", de)
	}
	if !strings.Contains(err.Error(), "blob stalled: past its deadline") {
		t.Errorf("stalled put says %q", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "stalled")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the stalled put was stored: %v", err)
	}

	fifo := filepath.Join(dir, "slow")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// Held open for writing (so the parent's open does not block), and
	// written once.
	f, err := os.OpenFile(fifo, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WriteString("a start")
	rc, err := blobs.Get(ctx, "slow")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if !errors.As(err, &de) || ctx.Err() != nil || string(got) != "a start" {
		t.Fatalf("stalled get: %q, %v", got, err)
	}

	// The link is still good.
	if err := blobs.Put(ctx, "after", strings.NewReader("fine")); err != nil {
		t.Fatal(err)
	}
}
