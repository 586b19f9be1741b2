package nip

import (
	"encoding/base64"
	"strconv"
	"time"

	"github.com/nbd-wtf/go-nostr"
)

// Kinds of the enclaved event formats (DESIGN.md).
const (
	KindContainerCert   = 23797 // certificate from a key to a container's key, embedded only
	KindContainerStatus = 63797 // a container's status, signed by its own key
)

// ContainerCertTTL is how long a container certificate is valid:
// upstream's 3 h. Certificates are issued anew with every status event,
// which is republished well within that (publish.StatusEvery).
const ContainerCertTTL = 3 * time.Hour

// ContainerCert builds the unsigned kind-23797 certificate by which the
// instance key vouches for a container's key, with upstream's tags in
// upstream's order: p <container> container, expiration, alt, r
// docker://<image>. It is embedded (as JSON) in the container's status
// events, never published alone.
func ContainerCert(container, image string, expires time.Time, now nostr.Timestamp) nostr.Event {
	return nostr.Event{Kind: KindContainerCert, CreatedAt: now, Content: "", Tags: nostr.Tags{
		{"p", container, "container"},
		{"expiration", strconv.FormatInt(expires.Unix(), 10)},
		{"alt", "enclaved container certificate"},
		{"r", "docker://" + image},
	}}
}

// Status is what a container's kind-63797 status event says.
type Status struct {
	// Instance is the instance's pubkey (hex).
	Instance string
	// TEERoot is the instance's kind-23793 attestation event as JSON
	// ("" while it has none); TEECert the signed kind-23797 certificate
	// for the container's key, as JSON.
	TEERoot, TEECert string
	// State is ours (records' states); the event carries upstream's
	// word where it means the same thing (UpstreamState).
	State       string
	BalanceSats int64
	// Image is the pinned image reference.
	Image string
	// App is the key the container's app is known by (hex). We have no
	// separate app key: it is the container's own key.
	App string
	// Admin is the owner's pubkey (hex), only if the owner agreed at
	// deploy (admin=yes); "" leaves the owner unnamed.
	Admin string
}

// UpstreamState is the state word upstream enclaved publishes for one of
// ours, where they mean the same thing: running is upstream's "deployed",
// paused (the balance ran out) is "paused" in both. Our other states have
// no upstream word and are published as they are.
func UpstreamState(ours string) string {
	if ours == "running" {
		return "deployed"
	}
	return ours
}

// ContainerStatus builds the unsigned kind-63797 status of a container,
// with upstream's tags in upstream's order: p <instance> enclaved,
// tee_root (when the instance has an attestation), tee_cert, alt, state
// (UpstreamState), balance in sats, upgrade "" (no automatic upgrades), p
// <app> app, p <owner> admin (only if s.Admin is set), r <image> docker.
func ContainerStatus(s Status, now nostr.Timestamp) nostr.Event {
	tags := nostr.Tags{{"p", s.Instance, "enclaved"}}
	if s.TEERoot != "" {
		tags = append(tags, nostr.Tag{"tee_root", s.TEERoot})
	}
	tags = append(tags,
		nostr.Tag{"tee_cert", s.TEECert},
		nostr.Tag{"alt", "enclaved container"},
		nostr.Tag{"state", UpstreamState(s.State)},
		nostr.Tag{"balance", strconv.FormatInt(s.BalanceSats, 10)},
		nostr.Tag{"upgrade", ""},
	)
	if s.App != "" {
		tags = append(tags, nostr.Tag{"p", s.App, "app"})
	}
	if s.Admin != "" {
		tags = append(tags, nostr.Tag{"p", s.Admin, "admin"})
	}
	tags = append(tags, nostr.Tag{"r", s.Image, "docker"})
	return nostr.Event{Kind: KindContainerStatus, CreatedAt: now, Content: "", Tags: tags}
}

// KindTEERoot is the instance's attestation event, embedded only.
const KindTEERoot = 23793

// TEERoot builds the unsigned kind-23793 attestation event: content is the
// base64 attestation document (whose public_key is the instance pubkey);
// tags ["-"], t (nitro mode: prod or debug; dev), expiration (when the
// document's signing certificate expires), alt.
func TEERoot(doc []byte, mode string, expires time.Time, now nostr.Timestamp) nostr.Event {
	return nostr.Event{Kind: KindTEERoot, CreatedAt: now, Content: base64.StdEncoding.EncodeToString(doc), Tags: nostr.Tags{
		{"-"},
		{"t", mode},
		{"expiration", strconv.FormatInt(expires.Unix(), 10)},
		{"alt", "attestation certificate by AWS Nitro Enclave"},
	}}
}
