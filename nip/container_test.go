package nip

import (
	"reflect"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"
)

// A container's status carries upstream's tags in upstream's order, with
// upstream's state word for a running container; the owner is named admin
// only when set.
func TestContainerStatusTags(t *testing.T) {
	const inst, app, owner = "11", "22", "33"
	s := Status{Instance: inst, TEERoot: "{root}", TEECert: "{cert}", State: "running", BalanceSats: 21, Image: "reg/app@sha256:00", App: app}
	got := ContainerStatus(s, 5)
	want := nostr.Tags{{"p", inst, "enclaved"}, {"tee_root", "{root}"}, {"tee_cert", "{cert}"}, {"alt", "enclaved container"},
		{"state", "deployed"}, {"balance", "21"}, {"upgrade", ""}, {"p", app, "app"}, {"r", "reg/app@sha256:00", "docker"}}
	if got.Kind != KindContainerStatus || got.CreatedAt != 5 || !reflect.DeepEqual(got.Tags, want) {
		t.Errorf("status %d %v\nwant %v", got.Kind, got.Tags, want)
	}
	s.Admin, s.State, s.TEERoot = owner, "stopped", ""
	got = ContainerStatus(s, 5)
	if got.Tags.Find("tee_root") != nil || got.Tags.FindWithValue("state", "stopped") == nil {
		t.Errorf("stopped, no attestation: %v", got.Tags)
	}
	if admin := got.Tags.FindWithValue("p", owner); len(admin) < 3 || admin[2] != "admin" {
		t.Errorf("admin tag: %v", got.Tags)
	}
	for ours, up := range map[string]string{"running": "deployed", "paused": "paused", "exited": "exited", "starting": "starting"} {
		if got := UpstreamState(ours); got != up {
			t.Errorf("UpstreamState(%s) = %s, want %s", ours, got, up)
		}
	}
}

// A container certificate has exactly one p tag (upstream's validator
// requires it) and upstream's tags in its order.
func TestContainerCertTags(t *testing.T) {
	exp := time.Unix(1000, 0).Add(ContainerCertTTL)
	got := ContainerCert("22", "reg/app@sha256:00", exp, 1000)
	want := nostr.Tags{{"p", "22", "container"}, {"expiration", "11800"}, {"alt", "enclaved container certificate"}, {"r", "docker://reg/app@sha256:00"}}
	if got.Kind != KindContainerCert || !reflect.DeepEqual(got.Tags, want) {
		t.Errorf("cert %d %v\nwant %v", got.Kind, got.Tags, want)
	}
}
