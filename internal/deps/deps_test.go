package deps

import (
	"errors"
	"fmt"
	"go/build"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/enclaved/enclaved/"

// The sides of the trust boundary, as the README's layout table says.
var (
	parentSide  = []string{"parent"}
	enclaveSide = []string{"enclave", "custody", "publish", "bot", "deployer", "deployer/docker", "records", "images", "billing", "billing/lnd", "zaps", "backup",
		"hostrouter", "httpapi", "pages", "egressproxy", "tunnel", "metrics"}
	// protocol packages: formats and rules, no I/O.
	protocol = []string{"nip", "egress", "money", "link"}
	// shared: used on more than one side (or outside, by verifiers and
	// the key store); they may import neither side.
	shared = []string{"attest", "config", "keystore", "link/linknet", "migrations", "store", "verify"}
	// tooling only the dev command and tests may reach.
	tooling = []string{"internal/testenv", "internal/regtest", "internal/proc", "internal/devregistry", "internal/devrelay"}
	// ioPackages are what protocol packages must not import.
	ioPackages = []string{"os", "os/exec", "net/http", "database/sql", "syscall", "github.com/docker/docker/client",
		"github.com/mdlayher/vsock", "google.golang.org/grpc", "github.com/mattn/go-sqlite3"}
)

type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

// list is every package of the module with its imports and its
// dependencies (the transitive closure of its imports). It reads the
// sources with go/build rather than running `go list`, so that go test's
// cache sees the files it read: a changed import runs this test again.
func list(t *testing.T) map[string]pkg {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	pkgs := map[string]pkg{}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "testdata") {
			return filepath.SkipDir
		}
		bp, err := build.ImportDir(path, 0)
		var none *build.NoGoError
		if errors.As(err, &none) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		rel, _ := filepath.Rel(root, path)
		pkgs[filepath.ToSlash(rel)] = pkg{ImportPath: module + filepath.ToSlash(rel), Imports: bp.Imports}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var deps func(name string, seen map[string]bool)
	deps = func(name string, seen map[string]bool) {
		for _, imp := range pkgs[name].Imports {
			if dep, ok := strings.CutPrefix(imp, module); ok && !seen[dep] {
				seen[dep] = true
				deps(dep, seen)
			}
		}
	}
	for name, p := range pkgs {
		seen := map[string]bool{}
		deps(name, seen)
		for dep := range seen {
			p.Deps = append(p.Deps, module+dep)
		}
		slices.Sort(p.Deps)
		pkgs[name] = p
	}
	return pkgs
}

// ours is the module's packages among paths, without the module prefix.
func ours(paths []string) []string {
	var out []string
	for _, p := range paths {
		if rest, ok := strings.CutPrefix(p, module); ok {
			out = append(out, rest)
		}
	}
	return out
}

func TestImportGraphFollowsTheTrustBoundary(t *testing.T) {
	pkgs := list(t)
	for _, name := range slices.Concat(parentSide, enclaveSide, protocol) {
		if _, ok := pkgs[name]; !ok {
			t.Fatalf("package %s is gone: update this test and the README's layout table", name)
		}
	}
	forbid := func(from []string, not []string, why string) {
		for _, name := range from {
			for _, dep := range ours(pkgs[name].Deps) {
				if slices.Contains(not, dep) {
					t.Errorf("%s depends on %s: %s", name, dep, why)
				}
			}
		}
	}
	for name := range pkgs {
		classified := slices.Contains(slices.Concat(parentSide, enclaveSide, protocol, shared), name)
		if !classified && !strings.HasPrefix(name, "internal/") && !strings.HasPrefix(name, "cmd/") {
			t.Errorf("package %s is on no side: add it to this test and to the README's layout table", name)
		}
	}
	forbid(shared, slices.Concat(parentSide, enclaveSide), "shared packages import neither side")
	forbid(parentSide, enclaveSide, "the parent never imports the enclave's side")
	forbid(enclaveSide, parentSide, "the enclave's side never imports the parent")
	var production []string
	for name := range pkgs {
		if !strings.HasPrefix(name, "internal/") && !strings.HasPrefix(name, "cmd/") {
			production = append(production, name)
		}
	}
	slices.Sort(production)
	forbid(production, tooling, "only the dev command and tests use test and dev tooling")
	for _, name := range protocol {
		for _, imp := range pkgs[name].Imports {
			if slices.Contains(ioPackages, imp) {
				t.Errorf("%s imports %s: protocol packages do no I/O", name, imp)
			}
		}
	}
}
