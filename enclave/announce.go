package enclave

import (
	"context"
	"fmt"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/nip"
)

// Announcement is the instance's kind-13793 announcement, signed.
func (in *Instance) Announcement(ctx context.Context) (nostr.Event, error) {
	root, err := in.teeRoot(ctx)
	if err != nil {
		return nostr.Event{}, err
	}
	free, err := in.Deployer.FreeUnits(ctx)
	if err != nil {
		return nostr.Event{}, err
	}
	in.mu.Lock()
	doc, expires := in.rootDoc, in.rootExpires
	in.mu.Unlock()
	u := in.Deployer.Unit()
	var build, launch string
	if in.build.ID != "" {
		build = in.build.String()
	}
	if in.launch.ID != "" {
		launch = in.launch.String()
	}
	evt := nip.AnnouncementEvent(nip.Announcement{
		Build: build, BuildPubkey: in.build.PubKey, Instance: launch, InstancePubkey: in.launch.PubKey,
		Name: in.cfg.Instance.Name, Version: in.version, Mode: in.mode(doc), InboxRelay: in.parts.Relays[0],
		Open: free > 0, Expires: expires, TEERoot: root, PCRs: doc.PCRs,
		Releases:  in.releases,
		PriceMsat: in.cfg.Pricing.MsatPerUnitHour, FreeUnits: max(free, 0), Capacity: in.Deployer.Capacity(),
		InstanceEgress: in.parts.Egress, ContainerEgress: in.cfg.Instance.ContainerEgress, ContainersConfined: in.parts.Confiner != nil,
		Unit: fmt.Sprintf("%d millicpu, %d MiB memory, %d pids, %d MiB disk", u.NanoCPUs/1_000_000, u.MemoryBytes>>20, u.Pids, u.DiskBytes>>20),
	}, nostr.Timestamp(in.now().Unix()))
	err = in.parts.Key.Keys().SignEvent(ctx, &evt)
	return evt, err
}
