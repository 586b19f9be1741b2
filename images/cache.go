package images

import (
	"context"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
)

// A digest names content: what a reference by digest resolves to (its
// linux/amd64 manifest, size, volumes) never changes, so the resolver
// remembers it (the last maxRemembered), and resolves of one digest at
// once are one conversation with the registry. Tags are resolved each
// time; whether the content is still there is the pull's business.
const maxRemembered = 256

type remembered struct {
	// The mutex protects the following elements.
	mu      sync.Mutex
	images  map[string]Image // by reference, as given
	order   []string         // references, oldest first
	pending map[string]*resolving
}

// resolving is a resolve under way: img and err are set once done closes.
type resolving struct {
	done chan struct{}
	img  Image
	err  error
}

// byDigest says whether ref names an image by digest.
func byDigest(ref string) bool {
	var opts []name.Option
	if isLoopbackRef(ref) {
		opts = append(opts, name.Insecure)
	}
	parsed, err := name.ParseReference(ref, opts...)
	if err != nil {
		return false
	}
	_, ok := parsed.(name.Digest)
	return ok
}

// once resolves ref with resolve unless it is remembered or being
// resolved: then it is that answer (or that resolve's).
func (c *remembered) once(ctx context.Context, ref string, resolve func() (Image, error)) (Image, error) {
	c.mu.Lock()
	if img, ok := c.images[ref]; ok {
		c.mu.Unlock()
		return img, nil
	}
	if p, ok := c.pending[ref]; ok {
		c.mu.Unlock()
		select {
		case <-p.done:
			return p.img, p.err
		case <-ctx.Done():
			return Image{}, &ImageError{"the instance is busy resolving other images; try again in a minute"}
		}
	}
	p := &resolving{done: make(chan struct{})}
	c.pending[ref] = p
	c.mu.Unlock()

	p.img, p.err = resolve()
	c.mu.Lock()
	delete(c.pending, ref)
	if p.err == nil {
		c.images[ref] = p.img
		c.order = append(c.order, ref)
		if len(c.order) > maxRemembered {
			delete(c.images, c.order[0])
			c.order = c.order[1:]
		}
	}
	c.mu.Unlock()
	close(p.done)
	return p.img, p.err
}
