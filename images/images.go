// Package images resolves renters' image references through the OCI
// distribution API of any registry (anonymous pulls) to a pinned
// linux/amd64 manifest, its size and whether it declares volumes. A
// registry is anyone's server: every answer is capped, resolves are
// bounded in number and time, and refusals are plain sentences.
//
// It runs inside the enclave (its connections go out through the
// parent's egress); quoting (billing) uses it before an invoice is issued.
package images

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Image is an image reference resolved to its linux/amd64 manifest.
type Image struct {
	Ref        string // as given
	Pinned     string // repository@sha256:... of the linux/amd64 manifest
	Digest     string // sha256:...
	Size       int64  // bytes its layers take unpacked, where declared (else compressed): DiskSize
	HasVolumes bool   // the image declares VOLUMEs (so its root may stay writable)
}

// ImageError is a reason an image cannot be used, meant for the renter.
type ImageError struct{ Msg string }

func (e *ImageError) Error() string { return e.Msg }

// Registry bounds: a registry is anyone's server, so what the resolver reads
// of it is capped, and so is how many conversations it holds at once.
const (
	// MaxRegistryBody caps one response body (a manifest, an index, a
	// config blob); a longer one is refused, never read whole.
	MaxRegistryBody = 4 << 20
	// MaxResolves is how many images are resolved at once; more wait
	// their turn within their deadline.
	MaxResolves = 4
)

// Resolver resolves image references through the OCI distribution API of
// any registry (anonymous pulls).
type Resolver struct {
	// Transport overrides the HTTP transport (inside the enclave: through
	// the parent's egress).
	Transport http.RoundTripper

	once sync.Once
	sem  chan struct{}
	by   remembered // references by digest, resolved
}

// errTooLarge is a registry response over MaxRegistryBody.
var errTooLarge = fmt.Errorf("a registry answer over %d MiB", MaxRegistryBody>>20)

// cappedTransport cuts every response body at MaxRegistryBody bytes (an
// error at the first byte over, so nothing larger is ever buffered).
type cappedTransport struct{ base http.RoundTripper }

func (t cappedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if resp.ContentLength > MaxRegistryBody {
		resp.Body.Close()
		return nil, errTooLarge
	}
	resp.Body = &cappedBody{rc: resp.Body, left: MaxRegistryBody}
	return resp, nil
}

type cappedBody struct {
	rc   io.ReadCloser
	left int64
}

func (b *cappedBody) Read(p []byte) (int, error) {
	if b.left < 0 {
		return 0, errTooLarge
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.rc.Read(p)
	if b.left -= int64(n); b.left < 0 {
		return n, errTooLarge
	}
	return n, err
}

func (b *cappedBody) Close() error { return b.rc.Close() }

// Resolve pins ref to the digest of its linux/amd64 manifest and reads its
// compressed size and volumes. Registries on loopback addresses are reached
// over plain HTTP (dev mode and tests); all others over HTTPS. At most
// MaxResolves run at once, each reading at most MaxRegistryBody per answer
// within ctx's deadline. A reference by digest is resolved once (cache.go).
func (r *Resolver) Resolve(ctx context.Context, ref string) (Image, error) {
	r.once.Do(func() {
		r.sem = make(chan struct{}, MaxResolves)
		r.by = remembered{images: map[string]Image{}, pending: map[string]*resolving{}}
	})
	if byDigest(ref) {
		return r.by.once(ctx, ref, func() (Image, error) { return r.bounded(ctx, ref) })
	}
	return r.bounded(ctx, ref)
}

// bounded resolves ref once one of MaxResolves turns is free.
func (r *Resolver) bounded(ctx context.Context, ref string) (Image, error) {
	select {
	case r.sem <- struct{}{}:
		defer func() { <-r.sem }()
	case <-ctx.Done():
		return Image{}, &ImageError{"the instance is busy resolving other images; try again in a minute"}
	}
	img, err := r.resolve(ctx, ref)
	if err != nil && ctx.Err() != nil {
		return Image{}, &ImageError{fmt.Sprintf("the registry of %s did not answer in time", ref)}
	}
	return img, err
}

func (r *Resolver) resolve(ctx context.Context, ref string) (Image, error) {
	var opts []name.Option
	if isLoopbackRef(ref) {
		opts = append(opts, name.Insecure)
	}
	parsed, err := name.ParseReference(ref, opts...)
	if err != nil {
		return Image{}, &ImageError{fmt.Sprintf("%q is not an image reference", ref)}
	}
	base := r.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	ropts := []remote.Option{remote.WithContext(ctx), remote.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"}),
		remote.WithTransport(cappedTransport{base})}
	desc, err := remote.Get(parsed, ropts...)
	if err != nil {
		return Image{}, registryError(ref, err)
	}
	var img v1.Image
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			return Image{}, registryError(ref, err)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return Image{}, registryError(ref, err)
		}
		var found *v1.Descriptor
		var have []string
		for i, m := range im.Manifests {
			if m.Platform == nil {
				continue
			}
			if m.Platform.OS == "linux" && m.Platform.Architecture == "amd64" {
				found = &im.Manifests[i]
				break
			}
			have = append(have, m.Platform.OS+"/"+m.Platform.Architecture)
		}
		if found == nil {
			return Image{}, &ImageError{fmt.Sprintf("%s has no linux/amd64 variant (it has %s)", ref, strings.Join(have, ", "))}
		}
		if img, err = idx.Image(found.Digest); err != nil {
			return Image{}, registryError(ref, err)
		}
	} else if img, err = desc.Image(); err != nil {
		return Image{}, registryError(ref, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return Image{}, registryError(ref, err)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" {
		return Image{}, &ImageError{fmt.Sprintf("%s is %s/%s; this instance runs linux/amd64 only", ref, cf.OS, cf.Architecture)}
	}
	m, err := img.Manifest()
	if err != nil {
		return Image{}, registryError(ref, err)
	}
	var size int64
	for _, l := range m.Layers {
		size += DiskSize(l)
	}
	d, err := img.Digest()
	if err != nil {
		return Image{}, registryError(ref, err)
	}
	return Image{
		Ref:        ref,
		Pinned:     parsed.Context().Name() + "@" + d.String(),
		Digest:     d.String(),
		Size:       size,
		HasVolumes: len(cf.Config.Volumes) > 0,
	}, nil
}

func registryError(ref string, err error) error {
	if errors.Is(err, errTooLarge) {
		return &ImageError{fmt.Sprintf("the registry of %s sent %s; refused", ref, errTooLarge)}
	}
	if strings.Contains(err.Error(), "stopped after 10 redirects") { // net/http's bound
		return &ImageError{fmt.Sprintf("the registry of %s redirects more than 10 times; refused", ref)}
	}
	var terr *transport.Error
	if errors.As(err, &terr) {
		switch terr.StatusCode {
		case http.StatusNotFound:
			return &ImageError{fmt.Sprintf("image %s not found", ref)}
		case http.StatusUnauthorized, http.StatusForbidden:
			return &ImageError{fmt.Sprintf("image %s is private or does not exist (only public images can be deployed)", ref)}
		}
		return &ImageError{fmt.Sprintf("registry refused %s (HTTP %d)", ref, terr.StatusCode)}
	}
	var nerr net.Error
	var oerr *net.OpError
	if errors.As(err, &nerr) || errors.As(err, &oerr) {
		return &ImageError{fmt.Sprintf("registry of %s unreachable", ref)}
	}
	// Anything else stays out of the reply (it may name what is behind the
	// parent): the renter hears that the image could not be read.
	return &ImageError{fmt.Sprintf("cannot read image %s: its registry's answer is not a usable image", ref)}
}

func isLoopbackRef(ref string) bool {
	host, _, _ := strings.Cut(ref, "/")
	h, _, err := net.SplitHostPort(host)
	if err != nil {
		h = host
	}
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// UncompressedSizeAnnotation is where eStargz layers declare their size
// unpacked (containers/storage reads it too).
const UncompressedSizeAnnotation = "io.containers.estargz.uncompressed-size"

// DiskSize is what a layer takes on disk as far as its descriptor tells: an
// uncompressed layer's own size, or the unpacked size it declares (never
// less than its compressed size); other compressed layers count at their
// compressed size, all a registry says of them.
func DiskSize(l v1.Descriptor) int64 {
	if !l.MediaType.IsLayer() || l.MediaType == types.OCIUncompressedLayer || l.MediaType == types.DockerUncompressedLayer {
		return l.Size
	}
	if v, err := strconv.ParseInt(l.Annotations[UncompressedSizeAnnotation], 10, 64); err == nil && v > l.Size && v < 1<<50 {
		return v
	}
	return l.Size
}
