package testenv

import (
	"bufio"
	"context"
	"io"
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

// WaitLog follows a container's output until a line contains want, and
// fails the test with what it printed if that does not happen in 30 s.
func WaitLog(tb testing.TB, dc *client.Client, id, want string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	logs, err := dc.ContainerLogs(ctx, id, container.LogsOptions{ShowStdout: true, ShowStderr: true, Follow: true})
	if err != nil {
		tb.Fatal(err)
	}
	defer logs.Close()
	pr, pw := io.Pipe()
	go func() { stdcopy.StdCopy(pw, pw, logs); pw.Close() }()
	sc := bufio.NewScanner(pr)
	var seen []string
	for sc.Scan() {
		if strings.Contains(sc.Text(), want) {
			return
		}
		seen = append(seen, sc.Text())
	}
	tb.Fatalf("container never printed %q; it printed:\n%s", want, strings.Join(seen, "\n"))
}
