package deployer_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"

	"github.com/enclaved/enclaved/deployer"
	"github.com/enclaved/enclaved/internal/testenv"
	"github.com/enclaved/enclaved/records"
)

func randomID() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Networks outlive containers removed from outside the instance. A deleted
// container's network goes with it even so; at Reconcile, this instance's
// networks whose container is gone and whose record is removed or unknown
// are removed, while a live container's network and another instance's
// network on the same engine stay.
func TestOrphanedNetworksRemoved(t *testing.T) {
	imgs := testenv.Images(t)
	dc := testenv.Docker(t)
	run := randomID()
	instance := "inst-orphans-" + run
	f := newFixture(t, instance)
	ctx := context.Background()
	exists := func(name string) bool {
		t.Helper()
		_, err := dc.NetworkInspect(ctx, name, network.InspectOptions{})
		return err == nil
	}
	fromOutside := func(id string) {
		t.Helper()
		if err := dc.ContainerRemove(ctx, id, container.RemoveOptions{Force: true}); err != nil {
			t.Fatal(err)
		}
	}

	// A live container: its network stays.
	live := "live" + run
	f.quoted(t, live, imgs.Hello, true, 1, 1000)
	f.pay(t, live, "pay-"+live, 100_000)
	// A container deleted by its owner after it was removed from
	// outside: its network goes at the deletion.
	deleted := "del" + run
	f.quoted(t, deleted, imgs.Hello, true, 1, 1000)
	f.pay(t, deleted, "pay-"+deleted, 100_000)
	for _, id := range []string{live, deleted} {
		if r := f.state(t, id); r.State != records.StateRunning {
			t.Fatalf("%s: %s (%s)", id, r.State, r.Reason)
		}
	}
	fromOutside(f.state(t, deleted).DockerID)
	if err := f.owner(t, deleted, "delete"); err != nil {
		t.Fatal(err)
	}
	if exists(deployer.RuntimeName(deleted)) {
		t.Error("a deleted container's network is left")
	}

	// A container of this instance without a record, and one of another
	// instance, both removed from outside.
	stray := "stray" + run
	other := "other" + run
	for id, inst := range map[string]string{stray: instance, other: "inst-other-" + run} {
		name := deployer.RuntimeName(id)
		t.Cleanup(func() { f.rt.RemoveNetwork(context.Background(), name) })
		c, err := f.rt.Create(ctx, deployer.Spec{Name: name, Image: imgs.Hello.Ref,
			Labels: map[string]string{deployer.LabelID: id, deployer.LabelInstance: inst}, Pids: 32, MemoryBytes: 64 << 20})
		if err != nil {
			t.Fatal(err)
		}
		fromOutside(c)
	}

	f.restart(t)
	if exists(deployer.RuntimeName(stray)) {
		t.Error("the network of a container without a record, removed from outside, is left after Reconcile")
	}
	if !exists(deployer.RuntimeName(other)) {
		t.Error("Reconcile removed another instance's network")
	}
	if !exists(deployer.RuntimeName(live)) || !f.running(t, live) {
		t.Error("Reconcile removed a live container's network")
	}
	if err := f.owner(t, live, "delete"); err != nil {
		t.Fatal(err)
	}
	if exists(deployer.RuntimeName(live)) {
		t.Error("a deleted container's network is left")
	}
}
