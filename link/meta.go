package link

// Metadata is the body of a Meta stream: what the parent says about where the
// enclave runs, as the operator configured it. The enclave verifies what
// matters (the signatures) and trusts none of it.
type Metadata struct {
	PublicIP   string `json:"public_ip,omitempty"`
	InstanceID string `json:"instance_id,omitempty"`
	// Signed events the operator supplies (JSON), embedded in the
	// enclave's announcements.
	Build    string   `json:"build,omitempty"`
	Instance string   `json:"instance,omitempty"`
	Releases []string `json:"releases,omitempty"`
}

// MaxMeta bounds a Metadata body.
const MaxMeta = 256 << 10

// BlobOK is the parent's answer once a BlobPut is stored; a put it does
// not store is reset with the reason (at once for one over its limit).
const BlobOK = "ok"
