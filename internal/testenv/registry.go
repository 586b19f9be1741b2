package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/enclaved/enclaved/internal/proc"
)

// RegistryServer is a local OCI registry (Debian's docker-registry, the CNCF
// distribution server) on 127.0.0.1. The Docker engine pulls from it over
// plain HTTP, as it does for any registry on 127.0.0.0/8.
type RegistryServer struct {
	// Host is host:port, the prefix of image references.
	Host string
	proc *proc.Proc
}

var registry sharedPart[*RegistryServer]

// Registry returns the package's shared local registry, starting it on first
// use. It fails the test if docker-registry is not installed.
func Registry(tb testing.TB) *RegistryServer {
	tb.Helper()
	return registry.get(tb, "registry", func() (*RegistryServer, func(), error) {
		srv, err := startRegistry()
		if err != nil {
			return nil, nil, err
		}
		return srv, srv.proc.Kill, nil
	})
}

func startRegistry() (*RegistryServer, error) {
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		return nil, fmt.Errorf("docker-registry not installed: run scripts/install-deps.sh (apt-get install docker-registry)")
	}
	dir, err := sharedDir("registry")
	if err != nil {
		return nil, err
	}
	port, err := proc.FreePort()
	if err != nil {
		return nil, err
	}
	host := fmt.Sprintf("127.0.0.1:%d", port)
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`, filepath.Join(dir, "data"), host)
	if err := os.WriteFile(filepath.Join(dir, "config.yml"), []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	p, err := proc.Start("docker-registry", dir, bin, "serve", filepath.Join(dir, "config.yml"))
	if err != nil {
		return nil, err
	}
	srv := &RegistryServer{Host: host, proc: p}
	err = waitOK("http://"+host+"/v2/", 20*time.Second, p)
	if err != nil {
		p.Kill()
		return nil, err
	}
	return srv, nil
}
