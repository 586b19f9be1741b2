package deployer

import "context"

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
	Logs(ctx context.Context, id string, lines int) (string, error)
	List(ctx context.Context) ([]Info, error)
	// DiskLimits says whether DiskBytes is enforced.
	DiskLimits() bool
}
