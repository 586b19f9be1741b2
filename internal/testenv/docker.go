package testenv

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"
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
func WaitLog(tb testing.TB, dc *client.Client, id, want string) {
	tb.Helper()
	var out strings.Builder
	err := waitFor(context.Background(), "container output "+want, 30*time.Second, func(ctx context.Context) (bool, error) {
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
