// Package devregistry serves container images from a registry on a local
// address, for `enclaved dev` (the demo image a newcomer deploys) and for
// building the FROM-scratch images tests push.
//
// It is outside the trust boundary and outside production: an instance in
// an enclave resolves renters' images on their own registries. The registry
// is go-containerregistry's (OCI distribution API, in memory) and is
// read-only once the images are pushed.
package devregistry

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"net"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Registry is a running in-memory registry.
type Registry struct {
	// Host is host:port, the prefix of its image references.
	Host string

	srv      *http.Server
	done     chan error
	readOnly atomic.Bool
}

// Start listens on addr (host:port; port 0 picks a free one) and serves an
// empty registry that accepts pushes until Seal.
func Start(addr string) (*Registry, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("registry listen: %w", err)
	}
	r := &Registry{Host: ln.Addr().String(), done: make(chan error, 1)}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	r.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if r.readOnly.Load() && req.Method != http.MethodGet && req.Method != http.MethodHead {
			http.Error(w, "this registry is read-only", http.StatusMethodNotAllowed)
			return
		}
		reg.ServeHTTP(w, req)
	})}
	go func() { r.done <- r.srv.Serve(ln) }()
	return r, nil
}

// Seal makes the registry read-only: nothing more can be pushed.
func (r *Registry) Seal() { r.readOnly.Store(true) }

// Close stops serving.
func (r *Registry) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := r.srv.Shutdown(ctx)
	if serveErr := <-r.done; !errors.Is(serveErr, http.ErrServerClosed) {
		err = errors.Join(err, serveErr)
	}
	return err
}

// Image is an image pushed to a registry.
type Image struct {
	Ref    string // host/repo@sha256:..., pinned by digest
	Tag    string // host/repo:tag
	Digest string // sha256:...
	Size   int64  // compressed size of its layers
}

// ScratchImage builds a linux/amd64 image FROM scratch with one layer holding
// the given files (mode 0755, at the root) and an empty /tmp. The same files
// and config always give the same digest.
func ScratchImage(files map[string][]byte, cfg v1.Config) (v1.Image, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777}); err != nil {
		return nil, err
	}
	for _, n := range slices.Sorted(maps.Keys(files)) {
		if err := tw.WriteHeader(&tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(files[n]))}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(files[n]); err != nil {
			return nil, err
		}
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

// Push writes img to ref (a tag on a plain-HTTP registry) and returns it
// pinned by digest.
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
	layers, err := img.Layers()
	if err != nil {
		return Image{}, err
	}
	var size int64
	for _, l := range layers {
		s, err := l.Size()
		if err != nil {
			return Image{}, err
		}
		size += s
	}
	return Image{Ref: tag.Context().Name() + "@" + d.String(), Tag: tag.Name(), Digest: d.String(), Size: size}, nil
}

// DemoConfig is the demo image's config: the program at /hello, serving
// HTTP on 8080, counting its starts in the /data volume.
var DemoConfig = v1.Config{
	Entrypoint:   []string{"/hello"},
	ExposedPorts: map[string]struct{}{"8080/tcp": {}},
	Volumes:      map[string]struct{}{"/data": {}},
}

// DemoRepo is the demo image's repository on the dev registry.
const DemoRepo = "demo/hello"

// PushDemo wraps program (a static linux/amd64 binary of ./internal/devregistry/hello)
// in an image FROM scratch and pushes it as DemoRepo:latest.
func (r *Registry) PushDemo(ctx context.Context, program []byte) (Image, error) {
	img, err := ScratchImage(map[string][]byte{"hello": program}, DemoConfig)
	if err != nil {
		return Image{}, err
	}
	return Push(ctx, r.Host+"/"+DemoRepo+":latest", img)
}
