package deployer

import (
	"context"
	"io"
	"net/netip"
	"time"

	"github.com/enclaved/enclaved/egress"
)

// Label keys on every runtime object the deployer creates.
const (
	LabelID       = "enclaved.id"       // the container record's id
	LabelInstance = "enclaved.instance" // the instance pubkey (hex)
)

// Spec is what the runtime creates: the quoted image and limits, hardened.
type Spec struct {
	Name   string // unique runtime name; creating it twice returns the first
	Image  string // pinned reference (repository@sha256:...)
	Env    []string
	Labels map[string]string

	NanoCPUs    int64
	MemoryBytes int64
	Pids        int64
	DiskBytes   int64 // enforced only where the storage driver supports it

	// ExtraHosts are /etc/hosts lines, "host:address".
	ExtraHosts []string

	// ReadonlyRoot mounts the root file system read-only (images without
	// VOLUMEs have nowhere else to write, so they keep a writable root).
	ReadonlyRoot bool
}

// Info is a runtime container as listed.
type Info struct {
	ID      string
	Name    string
	Labels  map[string]string
	Running bool
}

// Runtime is the container engine as the deployer needs it.
type Runtime interface {
	Pull(ctx context.Context, ref string, progress func(status string)) error
	Create(ctx context.Context, s Spec) (id string, err error)
	Start(ctx context.Context, id string) error
	Stop(ctx context.Context, id string) error
	Remove(ctx context.Context, id string) error
	// ImageSize is the bytes a pulled image takes unpacked.
	ImageSize(ctx context.Context, ref string) (int64, error)
	// RemoveImage removes the image ref names, unless a container uses
	// it; one in use or gone already is not an error.
	RemoveImage(ctx context.Context, ref string) error
	Logs(ctx context.Context, id string, lines int) (string, error)
	List(ctx context.Context) ([]Info, error)
	// DiskLimits says whether DiskBytes is enforced.
	DiskLimits() bool
	// Network describes the network Create made for the container name.
	Network(ctx context.Context, name string) (Network, error)
	// ExportVolumes writes the contents of a container's volumes to w as
	// one tar, consistent as of one moment; a container that does not
	// exist is fs.ErrNotExist.
	ExportVolumes(ctx context.Context, id string, w io.Writer) error
	// ImportVolumes fills a created container's volumes from an archive
	// ExportVolumes wrote.
	ImportVolumes(ctx context.Context, id string, archive io.ReadSeeker) error
	// Watch calls fn with the runtime id and labels of each container
	// (with LabelID) that stopped or was removed since since, until ctx
	// ends or the stream fails.
	Watch(ctx context.Context, since time.Time, fn func(id string, labels map[string]string)) error
	// State is what the runtime says of one container now.
	State(ctx context.Context, id string) (State, error)
	// Networks lists the networks carrying LabelInstance (any
	// instance's: the caller picks its own).
	Networks(ctx context.Context) ([]NetworkInfo, error)
	// RemoveNetwork removes the networks called exactly name; none is
	// not an error, one a running container still uses is.
	RemoveNetwork(ctx context.Context, name string) error
}

// NetworkInfo is a runtime network as listed.
type NetworkInfo struct {
	ID     string
	Name   string
	Labels map[string]string
}

// State is a runtime container's state.
type State struct {
	Running    bool
	Gone       bool // the runtime has no such container
	ExitCode   int
	OOMKilled  bool
	FinishedAt time.Time // when it last stopped; zero if never
}

// Network is a container's own bridge network.
type Network struct {
	Bridge    string     // the host side's interface
	Gateway   netip.Addr // the host's address on it
	Container netip.Addr // the container's address (zero until it runs)
}

// Confiner runs a container's egress proxy (egressproxy.Manager): once
// confined, the container reaches only what its plan allows.
type Confiner interface {
	Confine(ctx context.Context, name, bridge string, gateway netip.Addr, plan egress.Plan) error
	Release(ctx context.Context, name string) error
}
