package images_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/enclaved/enclaved/images"
	"github.com/enclaved/enclaved/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func withArch(t *testing.T, arch string) v1.Image {
	t.Helper()
	img, err := testenv.ScratchImage(map[string][]byte{"x": []byte("x")}, v1.Config{Entrypoint: []string{"/x"}})
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.Architecture = arch
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func pushIndex(t *testing.T, ref string, imgs map[string]v1.Image) {
	t.Helper()
	idx := v1.ImageIndex(empty.Index)
	for arch, img := range imgs {
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	tag, _ := name.NewTag(ref, name.Insecure)
	if err := remote.WriteIndex(tag, idx); err != nil {
		t.Fatal(err)
	}
}

func TestResolve(t *testing.T) {
	imgs := testenv.Images(t)
	reg := testenv.Registry(t)
	ctx := context.Background()
	var r images.Resolver

	hello, err := r.Resolve(ctx, imgs.Hello.Tag)
	if err != nil {
		t.Fatal(err)
	}
	if hello.Pinned != imgs.Hello.Ref || hello.Size != imgs.Hello.Size || !hello.HasVolumes {
		t.Errorf("hello by tag: %+v, want pinned %s, size %d, volumes", hello, imgs.Hello.Ref, imgs.Hello.Size)
	}
	exit, err := r.Resolve(ctx, imgs.ExitAfter.Ref)
	if err != nil || exit.Pinned != imgs.ExitAfter.Ref || exit.HasVolumes {
		t.Errorf("exitafter by digest: %+v %v", exit, err)
	}

	arm := withArch(t, "arm64")
	amd := withArch(t, "amd64")
	armOnly := reg.Host + "/enclaved-test/arm:latest"
	if _, err := testenv.Push(ctx, armOnly, arm); err != nil {
		t.Fatal(err)
	}
	pushIndex(t, reg.Host+"/enclaved-test/multi:latest", map[string]v1.Image{"arm64": arm, "amd64": amd})
	pushIndex(t, reg.Host+"/enclaved-test/armindex:latest", map[string]v1.Image{"arm64": arm})

	multi, err := r.Resolve(ctx, reg.Host+"/enclaved-test/multi:latest")
	amdDigest, _ := amd.Digest()
	if err != nil || multi.Digest != amdDigest.String() {
		t.Errorf("multi-arch index: %+v %v, want the amd64 manifest %s", multi, err, amdDigest)
	}

	// A layer that declares its unpacked size counts at that size.
	layers, _ := amd.Layers()
	declared, err := mutate.Append(empty.Image, mutate.Addendum{Layer: layers[0],
		Annotations: map[string]string{images.UncompressedSizeAnnotation: strconv.Itoa(600 << 20)}})
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := amd.ConfigFile()
	if declared, err = mutate.ConfigFile(declared, cf); err != nil {
		t.Fatal(err)
	}
	if _, err := testenv.Push(ctx, reg.Host+"/enclaved-test/declared:latest", declared); err != nil {
		t.Fatal(err)
	}
	if img, err := r.Resolve(ctx, reg.Host+"/enclaved-test/declared:latest"); err != nil || img.Size != 600<<20 {
		t.Errorf("an image declaring 600 MiB unpacked: size %d, %v", img.Size, err)
	}

	refusals := map[string]string{
		armOnly: "runs linux/amd64 only",
		reg.Host + "/enclaved-test/armindex:latest": "no linux/amd64 variant (it has linux/arm64)",
		reg.Host + "/enclaved-test/nope:latest":     "not found",
		"127.0.0.1:1/enclaved-test/x:latest":        "unreachable",
		"Not A/Reference!!":                         "is not an image reference",
	}
	for ref, want := range refusals {
		_, err := r.Resolve(ctx, ref)
		var ie *images.ImageError
		if err == nil || !strings.Contains(err.Error(), want) || !errors.As(err, &ie) {
			t.Errorf("%s: %v, want an ImageError containing %q", ref, err, want)
		}
	}
}
