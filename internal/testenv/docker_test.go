package testenv_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/docker/go-connections/nat"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/enclaved/enclaved/internal/testenv"
)

// pull pulls ref by digest, draining the progress stream, and removes the
// image when the test ends.
func pull(t *testing.T, dc *client.Client, ref string) {
	t.Helper()
	ctx := context.Background()
	rc, err := dc.ImagePull(ctx, ref, image.PullOptions{})
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	progress, _ := io.ReadAll(rc)
	rc.Close()
	if strings.Contains(string(progress), `"error"`) {
		t.Fatalf("pull %s: %s", ref, progress)
	}
	t.Cleanup(func() {
		dc.ImageRemove(context.Background(), ref, image.RemoveOptions{Force: true, PruneChildren: true})
	})
}

func run(t *testing.T, dc *client.Client, cfg *container.Config, host *container.HostConfig) string {
	t.Helper()
	ctx := context.Background()
	created, err := dc.ContainerCreate(ctx, cfg, host, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		dc.ContainerRemove(context.Background(), created.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
	})
	if err := dc.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	return created.ID
}

// The images are in the registry, pinned by digest, linux/amd64, and the
// registry serves the same digest back.
func TestImagesPushedByDigest(t *testing.T) {
	imgs := testenv.Images(t)
	for _, img := range []testenv.Image{imgs.Hello, imgs.ExitAfter, imgs.Escape} {
		if !strings.Contains(img.Ref, "@sha256:") || !strings.HasPrefix(img.Ref, "127.0.0.1:") {
			t.Errorf("%s: ref %q is not a local digest reference", img.Name, img.Ref)
		}
		ref, err := name.ParseReference(img.Ref, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		desc, err := remote.Get(ref)
		if err != nil {
			t.Fatalf("%s: %v", img.Name, err)
		}
		if desc.Digest.String() != img.Digest {
			t.Errorf("%s: registry serves %s, want %s", img.Name, desc.Digest, img.Digest)
		}
		cfg, err := remote.Image(ref)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := cfg.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.Architecture != "amd64" || cf.OS != "linux" {
			t.Errorf("%s: platform %s/%s", img.Name, cf.OS, cf.Architecture)
		}
		if img.Size <= 0 || img.Size > 20<<20 {
			t.Errorf("%s: compressed size %d bytes, want a small static binary", img.Name, img.Size)
		}
	}
}

// exitafter pulled by digest runs, its output is read, its exit code seen,
// and it is removed.
func TestDockerRunsImageFromRegistry(t *testing.T) {
	imgs := testenv.Images(t)
	dc := testenv.Docker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pull(t, dc, imgs.ExitAfter.Ref)
	id := run(t, dc, &container.Config{Image: imgs.ExitAfter.Ref, Env: []string{"EXIT_AFTER=0", "EXIT_CODE=3"}}, nil)

	waitC, errC := dc.ContainerWait(ctx, id, container.WaitConditionNotRunning)
	select {
	case w := <-waitC:
		if w.StatusCode != 3 {
			t.Errorf("exit code %d, want 3", w.StatusCode)
		}
	case err := <-errC:
		t.Fatal(err)
	}
	logs, err := dc.ContainerLogs(ctx, id, container.LogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	stdcopy.StdCopy(&out, &out, logs)
	logs.Close()
	if !strings.Contains(out.String(), "exiting after 0s with code 3") || !strings.Contains(out.String(), "bye") {
		t.Errorf("container output %q", out.String())
	}
	if err := dc.ContainerRemove(ctx, id, container.RemoveOptions{}); err != nil {
		t.Fatalf("remove: %v", err)
	}
	if _, err := dc.ContainerInspect(ctx, id); !client.IsErrNotFound(err) {
		t.Errorf("container still there after remove: %v", err)
	}
}

// hello sees its environment, keeps its volume across a restart, and
// answers HTTP on a port published on 127.0.0.1 only.
func TestDockerHelloServesAndKeepsVolume(t *testing.T) {
	imgs := testenv.Images(t)
	dc := testenv.Docker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pull(t, dc, imgs.Hello.Ref)
	id := run(t, dc, &container.Config{Image: imgs.Hello.Ref, Env: []string{"RENTER=alice"}},
		&container.HostConfig{PortBindings: nat.PortMap{"8080/tcp": {{HostIP: "127.0.0.1", HostPort: "0"}}}})

	testenv.WaitLog(t, dc, id, "listening :8080")
	info, err := dc.ContainerInspect(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	bind := info.NetworkSettings.Ports["8080/tcp"]
	if len(bind) == 0 {
		t.Fatal("port 8080 not published")
	}
	url := fmt.Sprintf("http://127.0.0.1:%s/", bind[0].HostPort)
	body := httpGet(t, ctx, url)
	if !strings.Contains(body, "start 1") || !strings.Contains(body, "RENTER=alice") || !strings.Contains(body, "GREETING=hello") {
		t.Errorf("first answer %q", body)
	}

	timeout := 2
	if err := dc.ContainerRestart(ctx, id, container.StopOptions{Timeout: &timeout}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitHTTP(t, dc, id, 8080, "(start 2)")
}

func httpGet(t *testing.T, ctx context.Context, url string) string {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
