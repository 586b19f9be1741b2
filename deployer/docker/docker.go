// Package docker implements deployer.Runtime with the Docker Engine API.
//
// It runs inside the enclave, next to dockerd. Every container it creates is
// hardened: not privileged, all capabilities dropped, no-new-privileges, no
// host mounts or devices, its own bridge network, memory without swap, a pids
// limit, bounded logs, and a read-only root unless the image declares volumes.
//
// Each container's network gets a /29 of its own from a configured range
// (networks.go), never from the engine's default address pools, which run
// out after about thirty networks: the containers one instance runs at once
// are bounded by its CPU and memory, not by the engine's configuration.
package docker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/docker/docker/errdefs"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/moby/profiles/seccomp"

	"github.com/enclaved/enclaved/deployer"
)

// Runtime is a Docker engine.
type Runtime struct {
	c    *client.Client
	disk bool

	subnets netip.Prefix // where container networks' subnets come from
	pool    pool
}

var _ deployer.Runtime = (*Runtime)(nil)

// New connects to the engine (DOCKER_HOST or the default socket) and checks
// whether its storage driver can limit a container's disk. Container
// networks take their subnets from DefaultSubnets unless an option says.
func New(ctx context.Context, opts ...Option) (*Runtime, error) {
	r := &Runtime{subnets: DefaultSubnets}
	for _, o := range opts {
		o(r)
	}
	var err error
	if r.pool, err = newPool(r.subnets); err != nil {
		return nil, fmt.Errorf("docker: %w", err)
	}
	r.subnets = r.subnets.Masked()
	if r.c, err = client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation()); err != nil {
		return nil, fmt.Errorf("docker: %w", err)
	}
	info, err := r.c.Info(ctx)
	if err != nil {
		r.c.Close()
		return nil, fmt.Errorf("docker: engine not reachable: %w", err)
	}
	r.disk = diskLimitSupported(info.Driver, info.DriverStatus)
	return r, nil
}

// diskLimitSupported: --storage-opt size works on btrfs, zfs, and overlay2
// over xfs (with pquota, which the engine checks when creating).
func diskLimitSupported(driver string, status [][2]string) bool {
	switch driver {
	case "btrfs", "zfs":
		return true
	case "overlay2":
		for _, kv := range status {
			if kv[0] == "Backing Filesystem" && kv[1] == "xfs" {
				return true
			}
		}
	}
	return false
}

// Close closes the client.
func (r *Runtime) Close() error { return r.c.Close() }

// DiskLimits says whether Spec.DiskBytes is enforced.
func (r *Runtime) DiskLimits() bool { return r.disk }

// Pull pulls ref for linux/amd64, reading the whole progress stream, and
// reports status lines (deduplicated) to progress.
func (r *Runtime) Pull(ctx context.Context, ref string, progress func(string)) error {
	rc, err := r.c.ImagePull(ctx, ref, image.PullOptions{Platform: "linux/amd64"})
	if err != nil {
		return fmt.Errorf("pull %s: %w", ref, err)
	}
	defer rc.Close()
	dec := json.NewDecoder(rc)
	last := ""
	for {
		var m struct {
			Status string `json:"status"`
			Error  string `json:"error"`
		}
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("pull %s: %w", ref, err)
		}
		if m.Error != "" {
			return fmt.Errorf("pull %s: %s", ref, m.Error)
		}
		if progress != nil && m.Status != "" && m.Status != last {
			last = m.Status
			progress(m.Status)
		}
	}
}

// Create creates the container and its own network (on a free /29 of the
// configured range). If a container with the
// same name exists (a crash after creating it), it returns that one.
func (r *Runtime) Create(ctx context.Context, s deployer.Spec) (string, error) {
	if existing, err := r.c.ContainerInspect(ctx, s.Name); err == nil {
		return existing.ID, nil
	} else if !errdefs.IsNotFound(err) {
		return "", fmt.Errorf("create %s: %w", s.Name, err)
	}
	// The engine's own duplicate check on network names is best-effort:
	// an existing network of this name (a crash after creating it) is
	// used, never a second one made.
	nets, err := r.networks(ctx, s.Name)
	if err != nil {
		return "", fmt.Errorf("create network %s: %w", s.Name, err)
	}
	if len(nets) == 0 {
		if err := r.createNetwork(ctx, s.Name, s.Labels); err != nil {
			return "", fmt.Errorf("create network %s: %w", s.Name, err)
		}
	}
	pids := s.Pids
	host := &container.HostConfig{
		NetworkMode:    container.NetworkMode(s.Name),
		Privileged:     false,
		CapDrop:        []string{"ALL"},
		SecurityOpt:    []string{"no-new-privileges:true", "seccomp=" + seccompProfile()},
		ReadonlyRootfs: s.ReadonlyRoot,
		Resources: container.Resources{
			NanoCPUs:   s.NanoCPUs,
			Memory:     s.MemoryBytes,
			MemorySwap: s.MemoryBytes, // no swap
			PidsLimit:  &pids,
		},
		ExtraHosts: s.ExtraHosts,
		// The confinement rules are IPv4: the container gets no IPv6,
		// not even link-local, to go around them with.
		Sysctls:       map[string]string{"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"},
		LogConfig:     container.LogConfig{Type: "json-file", Config: map[string]string{"max-size": "5m", "max-file": "2"}},
		RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyDisabled},
	}
	if s.ReadonlyRoot {
		host.Tmpfs = map[string]string{"/tmp": "rw,noexec,nosuid,size=64m"}
	}
	if r.disk && s.DiskBytes > 0 {
		host.StorageOpt = map[string]string{"size": strconv.FormatInt(s.DiskBytes, 10)}
	}
	create := func() (container.CreateResponse, error) {
		return r.c.ContainerCreate(ctx, &container.Config{Image: s.Image, Env: s.Env, Labels: s.Labels},
			host, &network.NetworkingConfig{}, nil, s.Name)
	}
	created, err := create()
	if errdefs.IsNotFound(err) && strings.Contains(err.Error(), "image") {
		// Another instance on this engine removed the image between our
		// pull and this create (it had no more use for it): pull again,
		// once, within the default pull deadline.
		pctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		perr := r.Pull(pctx, s.Image, nil)
		cancel()
		if perr != nil {
			return "", perr
		}
		created, err = create()
	}
	if err != nil {
		return "", fmt.Errorf("create %s: %w", s.Name, err)
	}
	return created.ID, nil
}

// Network describes the container's own network: Docker names a bridge
// br-<first 12 of the network id> unless told otherwise.
func (r *Runtime) Network(ctx context.Context, name string) (deployer.Network, error) {
	n, err := r.c.NetworkInspect(ctx, name, network.InspectOptions{})
	if err != nil {
		return deployer.Network{}, fmt.Errorf("network %s: %w", name, err)
	}
	out := deployer.Network{Bridge: n.Options["com.docker.network.bridge.name"]}
	if out.Bridge == "" && len(n.ID) >= 12 {
		out.Bridge = "br-" + n.ID[:12]
	}
	for _, c := range n.IPAM.Config {
		if a, err := netip.ParseAddr(c.Gateway); err == nil && a.Is4() {
			out.Gateway = a
		}
	}
	for _, ep := range n.Containers {
		if p, err := netip.ParsePrefix(ep.IPv4Address); err == nil {
			out.Container = p.Addr()
		}
	}
	if !out.Gateway.IsValid() {
		return out, fmt.Errorf("network %s has no IPv4 gateway", name)
	}
	return out, nil
}

// Start starts a created or stopped container, or thaws one a volume
// export left frozen (the instance stopped in the middle of it).
func (r *Runtime) Start(ctx context.Context, id string) error {
	err := r.c.ContainerStart(ctx, id, container.StartOptions{})
	if err != nil {
		if info, ierr := r.c.ContainerInspect(ctx, id); ierr == nil && info.State != nil && info.State.Paused {
			return r.c.ContainerUnpause(ctx, id)
		}
	}
	return err
}

// Stop stops a container, killing it after 10 s. Its data stays.
func (r *Runtime) Stop(ctx context.Context, id string) error {
	timeout := 10
	return r.c.ContainerStop(ctx, id, container.StopOptions{Timeout: &timeout})
}

// ImageSize is the bytes a pulled image takes unpacked.
func (r *Runtime) ImageSize(ctx context.Context, ref string) (int64, error) {
	info, err := r.c.ImageInspect(ctx, ref)
	if err != nil {
		return 0, fmt.Errorf("inspect image %s: %w", ref, err)
	}
	return info.Size, nil
}

// RemoveImage removes the image reference ref (and the image, if nothing
// else names it) unless a container uses it.
func (r *Runtime) RemoveImage(ctx context.Context, ref string) error {
	_, err := r.c.ImageRemove(ctx, ref, image.RemoveOptions{PruneChildren: true})
	if err == nil || errdefs.IsNotFound(err) || errdefs.IsConflict(err) {
		return nil
	}
	return fmt.Errorf("remove image %s: %w", ref, err)
}

// Remove removes a container, its anonymous volumes and its network. A
// container already gone is not an error.
func (r *Runtime) Remove(ctx context.Context, id string) error {
	info, err := r.c.ContainerInspect(ctx, id)
	if errdefs.IsNotFound(err) {
		return nil
	} else if err != nil {
		return err
	}
	if err := r.c.ContainerRemove(ctx, id, container.RemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !errdefs.IsNotFound(err) {
		return err
	}
	return r.RemoveNetwork(ctx, strings.TrimPrefix(info.Name, "/"))
}

// maxLogBytes bounds what Logs returns.
const maxLogBytes = 32 << 10

// Logs returns the last lines of stdout and stderr, at most 32 KiB.
func (r *Runtime) Logs(ctx context.Context, id string, lines int) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rc, err := r.c.ContainerLogs(ctx, id, container.LogsOptions{ShowStdout: true, ShowStderr: true, Tail: strconv.Itoa(lines)})
	if err != nil {
		return "", err
	}
	defer rc.Close()
	var out bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &out, io.LimitReader(rc, 4*maxLogBytes)); err != nil && !errors.Is(err, io.EOF) {
		// Docker 20.10 can leave a read of a restarted container's log
		// hanging: what arrived before the deadline is still the answer.
		if out.Len() == 0 || ctx.Err() == nil {
			return "", err
		}
	}
	b := out.Bytes()
	if len(b) > maxLogBytes {
		b = b[len(b)-maxLogBytes:]
	}
	return string(b), nil
}

// List lists every container carrying the enclaved.id label.
func (r *Runtime) List(ctx context.Context) ([]deployer.Info, error) {
	cs, err := r.c.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", deployer.LabelID))})
	if err != nil {
		return nil, err
	}
	out := make([]deployer.Info, 0, len(cs))
	for _, c := range cs {
		n := ""
		if len(c.Names) > 0 {
			n = strings.TrimPrefix(c.Names[0], "/")
		}
		out = append(out, deployer.Info{ID: c.ID, Name: n, Labels: c.Labels, Running: c.State == "running"})
	}
	return out, nil
}

// seccompProfile is moby's default seccomp profile as JSON, sent with each
// container rather than left to the engine: engines before 23.0 (Debian
// 12's docker.io 20.10, the enclave image's) have a default that still
// lets containers open AF_VSOCK sockets, and the parent listens on vsock.
var seccompProfile = sync.OnceValue(func() string {
	b, err := json.Marshal(seccomp.DefaultProfile())
	if err != nil {
		panic("seccomp profile: " + err.Error()) // a static value: cannot happen
	}
	return string(b)
})
