package docker_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"

	"github.com/enclaved/enclaved/config"
	"github.com/enclaved/enclaved/deployer"
	"github.com/enclaved/enclaved/deployer/docker"
	"github.com/enclaved/enclaved/internal/testenv"
)

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// The configuration's default range and subnet size are the runtime's.
func TestSubnetDefaultsMatchConfig(t *testing.T) {
	if got := config.Default().Instance.ContainerSubnets; got != docker.DefaultSubnets.String() {
		t.Errorf("config default instance.container_subnets %s, runtime default %s", got, docker.DefaultSubnets)
	}
	if config.ContainerSubnetBits != docker.SubnetBits {
		t.Errorf("config /%d, runtime /%d", config.ContainerSubnetBits, docker.SubnetBits)
	}
	if _, err := docker.New(context.Background(), docker.Subnets(netip.MustParsePrefix("10.200.0.0/30"))); err == nil {
		t.Error("a runtime with a range smaller than one subnet")
	}
}

// subnetOf is the IPv4 subnet of the network called name, and its
// container's address (zero if none runs on it).
func subnetOf(t *testing.T, r *docker.Runtime, name string) (netip.Prefix, deployer.Network) {
	t.Helper()
	n, err := r.Network(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	p, err := n.Gateway.Prefix(docker.SubnetBits)
	if err != nil {
		t.Fatal(err)
	}
	return p, n
}

// More containers than an engine's default address pools hold networks for
// (about thirty) run at once, each on its own /29 of the default range.
func TestMoreContainersThanDefaultPools(t *testing.T) {
	const n = 40
	imgs := testenv.Images(t)
	r := newRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := r.Pull(ctx, imgs.Hello.Ref, nil); err != nil {
		t.Fatal(err)
	}
	prefix := "enclaved-test-many-" + randomHex(4) + "-"
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	t.Cleanup(func() {
		for _, name := range names {
			r.Remove(context.Background(), name)
			r.RemoveNetwork(context.Background(), name)
		}
	})
	var wg sync.WaitGroup
	errs := make([]error, n)
	work := make(chan int)
	for range 4 {
		wg.Go(func() {
			for i := range work {
				id, err := r.Create(ctx, spec(names[i], imgs.Hello.Ref, false))
				if err == nil {
					err = r.Start(ctx, id)
				}
				errs[i] = err
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	seen := map[netip.Prefix]string{}
	for i, name := range names {
		if errs[i] != nil {
			t.Fatalf("container %d of %d: %v", i+1, n, errs[i])
		}
		subnet, net := subnetOf(t, r, name)
		if !docker.DefaultSubnets.Contains(subnet.Addr()) || !subnet.Contains(net.Container) {
			t.Errorf("%s: gateway %s, container %s: want both in one /%d of %s", name, net.Gateway, net.Container, docker.SubnetBits, docker.DefaultSubnets)
		}
		if other, ok := seen[subnet]; ok {
			t.Errorf("%s and %s share %s", name, other, subnet)
		}
		seen[subnet] = name
	}
	list, err := r.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	running := 0
	for _, c := range list {
		if c.Running && len(c.Name) > len(prefix) && c.Name[:len(prefix)] == prefix {
			running++
		}
	}
	if running != n {
		t.Errorf("%d of %d containers running", running, n)
	}
}

// A subnet some other network holds (here one the test made on the first
// subnets the runtime would try) is skipped: the container's network gets
// the next free one, and the other network is left alone.
func TestSubnetClashIsSkipped(t *testing.T) {
	imgs := testenv.Images(t)
	dc := testenv.Docker(t)
	ctx := context.Background()
	// A range of this test's own, so that no other test's networks land in it.
	rng := netip.MustParsePrefix("10.213.0.0/24")
	r, err := docker.New(ctx, docker.Subnets(rng))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	if err := r.Pull(ctx, imgs.Hello.Ref, nil); err != nil {
		t.Fatal(err)
	}
	run := randomHex(4)
	name := "enclaved-test-clash-" + run
	tried := docker.Candidates(r, name, 3)
	var blockers []string
	t.Cleanup(func() {
		r.Remove(context.Background(), name)
		for _, b := range blockers {
			dc.NetworkRemove(context.Background(), b)
		}
	})
	for i, subnet := range tried[:2] {
		b := fmt.Sprintf("enclaved-test-blocker-%s-%d", run, i)
		if _, err := dc.NetworkCreate(ctx, b, network.CreateOptions{Driver: "bridge", Labels: map[string]string{"enclaved.test": run},
			IPAM: &network.IPAM{Config: []network.IPAMConfig{{Subnet: subnet.String()}}}}); err != nil {
			t.Fatal(err)
		}
		blockers = append(blockers, b)
	}
	id, err := r.Create(ctx, spec(name, imgs.Hello.Ref, false))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	subnet, net := subnetOf(t, r, name)
	if subnet != tried[2] || !subnet.Contains(net.Container) {
		t.Errorf("the container's network is %s (container %s), want %s: the first free subnet after %v", subnet, net.Container, tried[2], tried[:2])
	}
	list, err := dc.NetworkList(ctx, network.ListOptions{Filters: filters.NewArgs(filters.Arg("label", "enclaved.test="+run))})
	if err != nil || len(list) != 2 {
		t.Errorf("the blocking networks: %d left, %v", len(list), err)
	}
}
