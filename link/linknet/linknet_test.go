package linknet

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestBadVsockAddresses(t *testing.T) {
	for _, addr := range []string{"vsock:", "vsock:x", "vsock:3:7000", "vsock:-1"} {
		if _, err := Listen(addr); err == nil || !strings.Contains(err.Error(), "want vsock:PORT") {
			t.Errorf("Listen(%q) = %v, want a vsock:PORT error", addr, err)
		}
	}
	ctx := context.Background()
	for _, addr := range []string{"vsock:", "vsock:7000", "vsock:x:7000", "vsock:3:", "vsock:3:y"} {
		if _, err := DialAddr(ctx, addr); err == nil || !strings.Contains(err.Error(), "want vsock:CID:PORT") {
			t.Errorf("DialAddr(%q) = %v, want a vsock:CID:PORT error", addr, err)
		}
	}
}

// roundTrip listens on addr, dials what it listens on, and sends a line.
func roundTrip(t *testing.T, addr string, dial func(l net.Listener) string) {
	t.Helper()
	l, err := Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		c.Write([]byte("hello"))
		c.Close()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := DialAddr(ctx, dial(l))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "hello" {
		t.Fatalf("read %q, %v; want hello", got, err)
	}
}

func TestTCP(t *testing.T) {
	roundTrip(t, "127.0.0.1:0", func(l net.Listener) string { return l.Addr().String() })
}

func TestUnixReplacesAStaleSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "link.sock")
	if err := os.WriteFile(sock, nil, 0o600); err != nil { // left by an earlier run
		t.Fatal(err)
	}
	roundTrip(t, "unix:"+sock, func(net.Listener) string { return "unix:" + sock })
}
