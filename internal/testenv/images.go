package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/enclaved/enclaved/internal/devregistry"
)

// Image is a test image pushed to the local registry.
type Image struct {
	Name   string // hello, exitafter, escape
	Ref    string // host/enclaved-test/name@sha256:..., pinned by digest
	Tag    string // host/enclaved-test/name:latest
	Digest string // sha256:...
	Size   int64  // compressed size of its layers
}

// TestImages are the images every e2e test can run.
type TestImages struct {
	// Hello prints its environment, counts starts in its /data volume and
	// serves HTTP on 8080.
	Hello Image
	// ExitAfter exits after EXIT_AFTER seconds with EXIT_CODE.
	ExitAfter Image
	// Escape probes its container's limits (see images/escape).
	Escape Image
}

// imageSpec says how each program becomes an image.
var imageSpecs = map[string]v1.Config{
	"hello": {
		Entrypoint:   []string{"/hello"},
		Env:          []string{"GREETING=hello"},
		ExposedPorts: map[string]struct{}{"8080/tcp": {}},
		Volumes:      map[string]struct{}{"/data": {}},
	},
	"exitafter": {Entrypoint: []string{"/exitafter"}},
	"escape":    {Entrypoint: []string{"/escape"}},
}

var images sharedPart[*TestImages]

// Images builds the test programs as static binaries, wraps each in an
// image FROM scratch (one layer, linux/amd64), pushes them to the shared
// local registry and returns their digest references. Builds are reproducible,
// so digests only change when the programs do.
func Images(tb testing.TB) *TestImages {
	tb.Helper()
	reg := Registry(tb)
	return images.get(tb, "images", func() (*TestImages, func(), error) {
		t := &TestImages{}
		for name, dst := range map[string]*Image{"hello": &t.Hello, "exitafter": &t.ExitAfter, "escape": &t.Escape} {
			img, err := buildAndPush(context.Background(), reg.Host, name)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: %w", name, err)
			}
			*dst = img
		}
		return t, nil, nil
	})
}

func buildAndPush(ctx context.Context, host, prog string) (Image, error) {
	body, err := program(ctx, prog)
	if err != nil {
		return Image{}, err
	}
	img, err := ScratchImage(map[string][]byte{prog: body}, imageSpecs[prog])
	if err != nil {
		return Image{}, err
	}
	return Push(ctx, host+"/enclaved-test/"+prog+":latest", img)
}

// program builds the test program prog as a static linux/amd64 binary and
// returns it.
func program(ctx context.Context, prog string) ([]byte, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	dir, err := sharedDir("image-" + prog)
	if err != nil {
		return nil, err
	}
	bin := filepath.Join(dir, prog)
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./internal/testenv/images/"+prog)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build: %v\n%s", err, out)
	}
	return os.ReadFile(bin)
}

// ScratchImage builds a linux/amd64 image FROM scratch with one layer holding
// the given files (see devregistry.ScratchImage).
func ScratchImage(files map[string][]byte, cfg v1.Config) (v1.Image, error) {
	return devregistry.ScratchImage(files, cfg)
}

// Push writes img to ref (a tag on an HTTP registry) and returns it pinned
// by digest.
func Push(ctx context.Context, ref string, img v1.Image) (Image, error) {
	pushed, err := devregistry.Push(ctx, ref, img)
	if err != nil {
		return Image{}, err
	}
	tag, err := name.NewTag(ref, name.Insecure)
	if err != nil {
		return Image{}, err
	}
	return Image{
		Name:   strings.TrimPrefix(tag.RepositoryStr(), "enclaved-test/"),
		Ref:    pushed.Ref,
		Tag:    pushed.Tag,
		Digest: pushed.Digest,
		Size:   pushed.Size,
	}, nil
}
