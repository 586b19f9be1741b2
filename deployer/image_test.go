package deployer_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/enclaved/enclaved/deployer"
	"github.com/enclaved/enclaved/internal/testenv"
	"github.com/enclaved/enclaved/records"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// Images take room (in the enclave, RAM): the image of a removed container
// is removed once no other container uses it, and a later launch of it
// pulls it again.
func TestUnusedImagesAreRemoved(t *testing.T) {
	imgs := testenv.Images(t)
	reg := testenv.Registry(t)
	dc := testenv.Docker(t)
	ctx := context.Background()
	// An image of this test's own (hello and one more file), so no other
	// test's containers share it.
	hello, err := remote.Image(mustRef(t, imgs.Hello.Ref))
	if err != nil {
		t.Fatal(err)
	}
	extra, err := testenv.ScratchImage(map[string][]byte{"nonce": []byte(time.Now().String())}, v1.Config{})
	if err != nil {
		t.Fatal(err)
	}
	layers, _ := extra.Layers()
	own, err := mutate.AppendLayers(hello, layers[len(layers)-1])
	if err != nil {
		t.Fatal(err)
	}
	img, err := testenv.Push(ctx, reg.Host+"/enclaved-test/unused:latest", own)
	if err != nil {
		t.Fatal(err)
	}
	present := func() bool {
		_, err := dc.ImageInspect(ctx, img.Ref)
		return err == nil
	}

	f := newFixture(t, "inst-images")
	for _, id := range []string{"img-a", "img-b"} {
		f.quoted(t, id, img, true, 1, 3_600_000)
		f.pay(t, id, "pay-"+id, 3_600_000)
		if r := f.state(t, id); r.State != records.StateRunning {
			t.Fatalf("%s: %s (%s)", id, r.State, r.Reason)
		}
	}
	if err := f.d.Remove(ctx, "img-a", "test"); err != nil {
		t.Fatal(err)
	}
	if !present() {
		t.Fatal("the image was removed while another container uses it")
	}
	if err := f.d.Remove(ctx, "img-b", "test"); err != nil {
		t.Fatal(err)
	}
	if present() {
		t.Fatal("the image of removed containers is still in the engine")
	}
	f.quoted(t, "img-c", img, true, 1, 3_600_000)
	f.pay(t, "img-c", "pay-img-c", 3_600_000)
	if r := f.state(t, "img-c"); r.State != records.StateRunning || !present() {
		t.Errorf("a launch after the image was removed: %s (%s)", r.State, r.Reason)
	}
	f.d.Remove(ctx, "img-c", "test")
}

// A registry tells only compressed sizes: an image that unpacks past its
// units' disk is found out after the pull, removed again, and not run;
// the renter is told and the balance kept.
func TestImageUnpackedPastTheDiskIsNotRun(t *testing.T) {
	imgs := testenv.Images(t)
	f := newFixture(t, "inst-unpacked", func(c *deployer.Config) { c.Unit.DiskBytes = 4 << 20 }) // hello unpacks to 5.5 MiB
	f.quoted(t, "big", imgs.Hello, true, 1, 3_600_000)
	f.pay(t, "big", "pay-big", 3_600_000)
	r := f.state(t, "big")
	if r.State != records.StateFailed || !strings.Contains(r.Reason, "the image takes 5 MiB unpacked; 1 unit(s) give 4 MiB of disk") || r.BalanceMsat != 3_600_000 {
		t.Errorf("an image unpacked past the disk: %s (%s), balance %d", r.State, r.Reason, r.BalanceMsat)
	}
	if f.inbox.count("could not be started") != 1 || f.running(t, "big") {
		t.Errorf("the owner was not told, or it runs: %+v", f.inbox.notices)
	}
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}
