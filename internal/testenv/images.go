package testenv

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
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
	root, err := RepoRoot()
	if err != nil {
		return Image{}, err
	}
	dir, err := sharedDir("image-" + prog)
	if err != nil {
		return Image{}, err
	}
	bin := filepath.Join(dir, prog)
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./internal/testenv/images/"+prog)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		return Image{}, fmt.Errorf("go build: %v\n%s", err, out)
	}
	body, err := os.ReadFile(bin)
	if err != nil {
		return Image{}, err
	}
	img, err := ScratchImage(map[string][]byte{prog: body}, imageSpecs[prog])
	if err != nil {
		return Image{}, err
	}
	return Push(ctx, host+"/enclaved-test/"+prog+":latest", img)
}

// ScratchImage builds a linux/amd64 image FROM scratch with one layer holding
// the given files (mode 0755, at the root) and an empty /tmp.
func ScratchImage(files map[string][]byte, cfg v1.Config) (v1.Image, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777})
	for _, n := range slices.Sorted(maps.Keys(files)) {
		if err := tw.WriteHeader(&tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(files[n]))}); err != nil {
			return nil, err
		}
		tw.Write(files[n])
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(buf.Bytes())), nil
	})
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = "amd64", "linux"
	cf.Config = cfg
	return mutate.ConfigFile(img, cf)
}

// Push writes img to ref (a tag on an HTTP registry) and returns it pinned
// by digest.
func Push(ctx context.Context, ref string, img v1.Image) (Image, error) {
	tag, err := name.NewTag(ref, name.Insecure)
	if err != nil {
		return Image{}, err
	}
	if err := remote.Write(tag, img, remote.WithContext(ctx)); err != nil {
		return Image{}, fmt.Errorf("push %s: %w", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		return Image{}, err
	}
	layers, _ := img.Layers()
	var size int64
	for _, l := range layers {
		s, _ := l.Size()
		size += s
	}
	return Image{
		Name:   tag.RepositoryStr()[len("enclaved-test/"):],
		Ref:    tag.Context().Name() + "@" + d.String(),
		Tag:    tag.Name(),
		Digest: d.String(),
		Size:   size,
	}, nil
}
