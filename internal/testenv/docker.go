package testenv

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/enclaved/enclaved/internal/proc"
)

// Docker returns a client of the machine's Docker engine (DOCKER_HOST or the
// default socket), with the API version negotiated. It fails the test if the
// engine does not answer.
func Docker(tb testing.TB) *client.Client {
	tb.Helper()
	c, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		tb.Fatalf("docker: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Ping(ctx); err != nil {
		host := os.Getenv("DOCKER_HOST")
		if host == "" {
			host = client.DefaultDockerHost
		}
		tb.Fatalf("docker: engine not reachable at %s: %v", host, err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// WaitLog waits until a container's output has a line containing want, and
// fails the test with what it printed if that does not happen in 30 s. It
// re-reads the log rather than following it: the engine's follow mode can
// miss lines written while it switches from reading to watching the file.
// Each read gets a few seconds: Docker 20.10 can leave a read of a
// container's log hanging when the container restarts meanwhile.
func WaitLog(tb testing.TB, dc *client.Client, id, want string) {
	tb.Helper()
	var out strings.Builder
	err := proc.WaitFor(context.Background(), "container output "+want, 30*time.Second, func(ctx context.Context) (bool, error) {
		ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		rc, err := dc.ContainerLogs(ctx, id, container.LogsOptions{ShowStdout: true, ShowStderr: true})
		if err != nil {
			return false, err
		}
		defer rc.Close()
		out.Reset()
		if _, err := stdcopy.StdCopy(&out, &out, rc); err != nil {
			return false, err
		}
		return strings.Contains(out.String(), want), nil
	})
	if err != nil {
		tb.Fatalf("%v; it printed:\n%s", err, out.String())
	}
}

// WaitHTTP waits until GET http://<container's address>:port/ answers with
// a body containing want, and fails the test with the last answer if that
// does not happen in 2 min. It reaches the container over its bridge
// network, so after one inspect it does not depend on the engine (whose
// archive and log reads can stall under load); the container must not be
// confined.
func WaitHTTP(tb testing.TB, dc *client.Client, id string, port int, want string) {
	tb.Helper()
	var last string
	hc := &http.Client{Timeout: 5 * time.Second}
	addr := ""
	err := proc.WaitFor(context.Background(), fmt.Sprintf("container port %d answering %q", port, want), 2*time.Minute, func(ctx context.Context) (bool, error) {
		if addr == "" {
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			info, err := dc.ContainerInspect(ctx, id)
			if err != nil {
				return false, err
			}
			for _, n := range info.NetworkSettings.Networks {
				if n.IPAddress != "" {
					addr = net.JoinHostPort(n.IPAddress, strconv.Itoa(port))
				}
			}
			if addr == "" {
				return false, errors.New("the container has no address yet")
			}
		}
		resp, err := hc.Get("http://" + addr + "/")
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		last = string(b)
		return err == nil && strings.Contains(last, want), err
	})
	if err != nil {
		tb.Fatalf("%v; it answered %q", err, last)
	}
}

// TarFiles reads a tar into name → content, "/" for a directory.
func TarFiles(tb testing.TB, b []byte) map[string]string {
	tb.Helper()
	out := map[string]string{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			tb.Fatalf("tar: %v", err)
		}
		c, _ := io.ReadAll(tr)
		if h.Typeflag == tar.TypeDir {
			c = []byte("/")
		}
		out[h.Name] = string(c)
	}
}

// Hardening is what a renter's container must look like to the engine.
type Hardening struct {
	NanoCPUs, Memory, Pids int64
	Network                string // its own network's name
	ReadonlyRoot           bool
}

// CheckHardened inspects container id and reports every way it differs
// from want: limits (swap = memory), no privileges (cap-drop ALL,
// no-new-privileges), no host mounts, devices or namespaces, its own
// network, the root file system mode.
func CheckHardened(tb testing.TB, dc *client.Client, id string, want Hardening) container.InspectResponse {
	tb.Helper()
	info, err := dc.ContainerInspect(context.Background(), id)
	if err != nil {
		tb.Fatalf("inspect %s: %v", id, err)
	}
	h := info.HostConfig
	if h.NanoCPUs != want.NanoCPUs || h.Memory != want.Memory || h.MemorySwap != want.Memory || h.PidsLimit == nil || *h.PidsLimit != want.Pids {
		tb.Errorf("limits: cpus %d mem %d swap %d pids %v, want %+v", h.NanoCPUs, h.Memory, h.MemorySwap, h.PidsLimit, want)
	}
	if h.Privileged || len(h.CapDrop) != 1 || h.CapDrop[0] != "ALL" || len(h.CapAdd) != 0 {
		tb.Errorf("privileges: privileged %v capdrop %v capadd %v", h.Privileged, h.CapDrop, h.CapAdd)
	}
	if !strings.Contains(strings.Join(h.SecurityOpt, ","), "no-new-privileges") {
		tb.Errorf("security opts %v", h.SecurityOpt)
	}
	if len(h.Binds) != 0 || len(h.Mounts) != 0 || len(h.Devices) != 0 || h.PidMode != "" || h.IpcMode == "host" || h.NetworkMode != container.NetworkMode(want.Network) {
		tb.Errorf("host access: binds %v mounts %v devices %v pid %q ipc %q net %q", h.Binds, h.Mounts, h.Devices, h.PidMode, h.IpcMode, h.NetworkMode)
	}
	if h.ReadonlyRootfs != want.ReadonlyRoot {
		tb.Errorf("read-only root %v, want %v", h.ReadonlyRootfs, want.ReadonlyRoot)
	}
	return info
}
