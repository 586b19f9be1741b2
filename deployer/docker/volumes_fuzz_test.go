package docker

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"path"
	"strings"
	"testing"
)

// FuzzVolumeEntries feeds fuzzed volume archives (as a restore brings
// them back from the parent's blob store) to the rewrite that splits one
// into each volume's tar for the engine: the tar it writes is readable,
// holds no more entries or bytes than the archive, and each entry (and
// each hard link's target) is a path inside the volume, named as it was
// under the volume in the archive.
func FuzzVolumeEntries(f *testing.F) {
	entry := func(tw *tar.Writer, h tar.Header, body string) {
		h.Size = int64(len(body))
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
			body = ""
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		tw.WriteHeader(&h)
		tw.Write([]byte(body))
	}
	archive := func(hs ...tar.Header) []byte {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		for _, h := range hs {
			entry(tw, h, "contents of "+h.Name)
		}
		tw.Close()
		return b.Bytes()
	}
	seeds := [][]byte{archive(
		tar.Header{Name: "data/sub/", Typeflag: tar.TypeDir},
		tar.Header{Name: "data/a", Typeflag: tar.TypeReg, Uid: 1000},
		tar.Header{Name: "data/sub/b", Typeflag: tar.TypeReg},
		tar.Header{Name: "var/lib/app/c", Typeflag: tar.TypeReg},
		tar.Header{Name: "data/l", Typeflag: tar.TypeLink, Linkname: "data/a"},
		tar.Header{Name: "data/s", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"},
	), archive(
		tar.Header{Name: "data/../../etc/evil", Typeflag: tar.TypeReg},
		tar.Header{Name: "etc/outside", Typeflag: tar.TypeReg},
		tar.Header{Name: "data/x/..", Typeflag: tar.TypeReg},
		tar.Header{Name: "data/sub/l", Typeflag: tar.TypeLink, Linkname: "data/a"},
		tar.Header{Name: "data/m", Typeflag: tar.TypeLink, Linkname: "data/../../etc/shadow"},
		tar.Header{Name: "/data/abs", Typeflag: tar.TypeReg},
		tar.Header{Name: "data", Typeflag: tar.TypeReg},
		tar.Header{Name: "data/", Typeflag: tar.TypeDir},
		tar.Header{Name: "data//double", Typeflag: tar.TypeReg},
		tar.Header{Name: "data/./dot", Typeflag: tar.TypeReg},
	), archive(
		tar.Header{Name: "var/lib/app/" + strings.Repeat("n", 200), Typeflag: tar.TypeReg, PAXRecords: map[string]string{"user.x": "y"}},
	), []byte("not a tar")}
	for _, s := range seeds {
		for which := range uint8(3) {
			f.Add(s, which)
		}
	}
	dests := []string{"/var/lib/app", "/data/sub", "/data"}
	f.Fuzz(func(t *testing.T, data []byte, which uint8) {
		dest := dests[int(which)%len(dests)]
		// What the archive holds: entries, and the bytes they declare
		// (a sparse entry declares gigabytes of holes in a few bytes;
		// such archives are skipped, not looked for).
		in := map[string]bool{}
		var declared int64
		tr := tar.NewReader(bytes.NewReader(data))
		n := 0
		for ; ; n++ {
			h, err := tr.Next()
			if err != nil {
				break
			}
			in[h.Name] = true
			if declared += max(h.Size, 0); declared > 1<<20 {
				return
			}
		}
		var out bytes.Buffer
		if err := volumeEntries(bytes.NewReader(data), dests, dest, &out); err != nil {
			return
		}
		inside := func(name string) bool {
			p := path.Join(dest, name)
			return !path.IsAbs(name) && strings.HasPrefix(p, dest+"/") && !strings.Contains("/"+name+"/", "/../")
		}
		tr = tar.NewReader(&out)
		var written int64
		for i := 0; ; i++ {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("the volume tar is unreadable: %v", err)
			}
			if i >= n {
				t.Fatalf("more entries out than the %d in", n)
			}
			b, _ := io.ReadAll(tr)
			if written += int64(len(b)); written > declared {
				t.Fatalf("%d bytes out of %d in", written, declared)
			}
			if !inside(h.Name) {
				t.Fatalf("entry %q is not inside volume %s", h.Name, dest)
			}
			if !in[dest[1:]+"/"+h.Name] && !in[dest[1:]+"/"+h.Name+"/"] {
				t.Fatalf("entry %q was not under %s in the archive", h.Name, dest)
			}
			if owner(dests, path.Join(dest, h.Name)[1:]) != dest {
				t.Fatalf("entry %q of volume %s belongs to another volume", h.Name, dest)
			}
			if h.Typeflag == tar.TypeLink && !inside(h.Linkname) {
				t.Fatalf("hard link %q to %q, outside volume %s", h.Name, h.Linkname, dest)
			}
		}
	})
}
