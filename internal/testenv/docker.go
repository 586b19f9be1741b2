package testenv

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/docker/docker/client"
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
