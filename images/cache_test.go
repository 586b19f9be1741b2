package images_test

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/enclaved/enclaved/images"
	"github.com/enclaved/enclaved/internal/testenv"
)

// countingTransport counts the requests that reach the registry.
type countingTransport struct{ n atomic.Int64 }

func (c *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return http.DefaultTransport.RoundTrip(req)
}

// A reference by digest is resolved once, however many deploys name it at
// once or later; a tag is asked each time (it may move).
func TestDigestResolvedOnce(t *testing.T) {
	imgs := testenv.Images(t)
	ctx := context.Background()
	ct := &countingTransport{}
	r := images.Resolver{Transport: ct}
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			img, err := r.Resolve(ctx, imgs.Hello.Ref)
			if err != nil || img.Pinned != imgs.Hello.Ref || img.Size != imgs.Hello.Size || !img.HasVolumes {
				t.Errorf("by digest: %+v %v", img, err)
			}
		})
	}
	wg.Wait()
	once := ct.n.Load()
	if once == 0 {
		t.Fatal("the registry was never asked")
	}
	if img, err := r.Resolve(ctx, imgs.Hello.Ref); err != nil || img.Ref != imgs.Hello.Ref || ct.n.Load() != once {
		t.Errorf("again by digest: %+v %v, %d requests more", img, err, ct.n.Load()-once)
	}
	// One conversation's worth of requests for the twenty (a resolve
	// asks for the manifest and the config, and more).
	for range 2 {
		before := ct.n.Load()
		if _, err := r.Resolve(ctx, imgs.Hello.Tag); err != nil {
			t.Fatal(err)
		}
		if ct.n.Load() == before {
			t.Error("a tag was answered without asking the registry")
		}
		if ct.n.Load()-before < once {
			t.Errorf("a tag's resolve took %d requests, the twenty by digest %d: they were not one", ct.n.Load()-before, once)
		}
	}
}
