package docker_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"

	"github.com/enclaved/enclaved/deployer"
	"github.com/enclaved/enclaved/deployer/docker"
	"github.com/enclaved/enclaved/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func newRuntime(t testing.TB) *docker.Runtime {
	t.Helper()
	testenv.Docker(t) // fails naming the engine if it is missing
	r, err := docker.New(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func spec(name, image string, readonly bool) deployer.Spec {
	return deployer.Spec{
		Name: name, Image: image, Labels: map[string]string{deployer.LabelID: name},
		NanoCPUs: 500_000_000, MemoryBytes: 64 << 20, Pids: 32, DiskBytes: 256 << 20, ReadonlyRoot: readonly,
	}
}

// The container gets exactly the quoted limits and the hardening, and its
// own network; creating it again returns the same container.
func TestCreateAppliesLimitsAndHardening(t *testing.T) {
	imgs := testenv.Images(t)
	r := newRuntime(t)
	dc := testenv.Docker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var statuses []string
	if err := r.Pull(ctx, imgs.Hello.Ref, func(s string) { statuses = append(statuses, s) }); err != nil {
		t.Fatal(err)
	}
	if len(statuses) == 0 {
		t.Error("pull reported no progress")
	}
	s := spec("enclaved-test-limits", imgs.Hello.Ref, false)
	s.Env = []string{"RENTER=alice"}
	id, err := r.Create(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Remove(context.Background(), id) })
	again, err := r.Create(ctx, s)
	if err != nil || again != id {
		t.Fatalf("second create: %s %v, want the same container %s", again, err, id)
	}
	if err := r.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	info := testenv.CheckHardened(t, dc, id, testenv.Hardening{NanoCPUs: s.NanoCPUs, Memory: s.MemoryBytes, Pids: s.Pids,
		Network: s.Name, ReadonlyRoot: false}) // hello declares a volume, so its root stays writable
	h := info.HostConfig
	if r.DiskLimits() != (h.StorageOpt["size"] != "") {
		t.Errorf("disk limits supported=%v but storage opts %v", r.DiskLimits(), h.StorageOpt)
	}

	list, err := r.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, c := range list {
		if c.ID == id && c.Running && c.Labels[deployer.LabelID] == s.Name {
			found = true
		}
	}
	if !found {
		t.Errorf("List does not show the running container: %+v", list)
	}

	testenv.WaitLog(t, dc, id, "listening")
	if err := r.Stop(ctx, id); err != nil {
		t.Fatal(err)
	}
	logs, err := r.Logs(ctx, id, 100)
	if err != nil || !strings.Contains(logs, "RENTER=alice") || !strings.Contains(logs, "starts 1") {
		t.Errorf("logs %q %v", logs, err)
	}
	if err := r.Remove(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := dc.ContainerInspect(ctx, id); err == nil {
		t.Error("container still exists after Remove")
	}
	if _, err := dc.NetworkInspect(ctx, s.Name, network.InspectOptions{}); err == nil {
		t.Error("network still exists after Remove")
	}
	if err := r.Remove(ctx, id); err != nil {
		t.Errorf("removing twice: %v", err)
	}
}

type probe struct {
	Probe   string `json:"probe"`
	Allowed bool   `json:"allowed"`
	Detail  string `json:"detail"`
}

// The escape image, run hardened, can neither write its root, mount, keep
// capabilities, gain privileges, start more processes than the limit, open
// a vsock socket (moby's default seccomp profile refuses AF_VSOCK; the
// parent listens on vsock), nor have an IPv6 address (the confinement
// rules are IPv4).
func TestHardenedContainerResistsEscapes(t *testing.T) {
	imgs := testenv.Images(t)
	r := newRuntime(t)
	dc := testenv.Docker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := r.Pull(ctx, imgs.Escape.Ref, nil); err != nil {
		t.Fatal(err)
	}
	s := spec("enclaved-test-escape", imgs.Escape.Ref, true)
	s.Env = []string{"PIDS_TRY=100"}
	id, err := r.Create(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Remove(context.Background(), id) })
	if err := r.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	waitC, errC := dc.ContainerWait(ctx, id, container.WaitConditionNotRunning)
	select {
	case <-waitC:
	case err := <-errC:
		t.Fatal(err)
	}
	logs, err := r.Logs(ctx, id, 100)
	if err != nil {
		t.Fatal(err)
	}
	info, err := dc.ContainerInspect(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	for _, opt := range info.HostConfig.SecurityOpt {
		if opt == "seccomp=unconfined" {
			t.Errorf("the container runs without seccomp: %q", opt)
		}
	}
	got := map[string]probe{}
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		var p probe
		if json.Unmarshal([]byte(line), &p) == nil {
			got[p.Probe] = p
		}
	}
	for _, name := range []string{"rootfs", "mount", "caps", "nonewprivs", "pids", "vsock", "ipv6"} {
		p, ok := got[name]
		if !ok {
			t.Errorf("probe %s did not report; logs:\n%s", name, logs)
			continue
		}
		if p.Allowed {
			t.Errorf("probe %s escaped: %s", name, p.Detail)
		}
		if name == "vsock" && !strings.Contains(p.Detail, "operation not permitted") {
			t.Errorf("probe vsock refused by something other than seccomp: %s", p.Detail)
		}
	}
}

// A container's network left by a crash (created, but not the container)
// is used again, never doubled; removing the container removes it.
func TestNetworkLeftByACrashIsReused(t *testing.T) {
	r := newRuntime(t)
	imgs := testenv.Images(t)
	ctx := context.Background()
	dc := testenv.Docker(t)
	name := "enclaved-netreuse-test"
	if err := r.Pull(ctx, imgs.Hello.Ref, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := dc.NetworkCreate(ctx, name, network.CreateOptions{Driver: "bridge"}); err != nil {
		t.Fatal(err)
	}
	id, err := r.Create(ctx, spec(name, imgs.Hello.Ref, true))
	if err != nil {
		t.Fatal(err)
	}
	count := func() int {
		list, err := dc.NetworkList(ctx, network.ListOptions{Filters: filters.NewArgs(filters.Arg("name", name))})
		if err != nil {
			t.Fatal(err)
		}
		return len(list)
	}
	if n := count(); n != 1 {
		t.Errorf("%d networks called %s, want the one left behind", n, name)
	}
	if err := r.Remove(ctx, id); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 0 {
		t.Errorf("%d networks left after the removal", n)
	}
}
