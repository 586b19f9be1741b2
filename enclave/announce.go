package enclave

import (
	"context"
	"fmt"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/nip"
)

// Announcements are republished every announceEvery, when the instance
// opens or closes (checked every announceCheck), and when the attestation
// renews.
const (
	announceEvery = time.Hour
	announceCheck = time.Minute
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

// announce keeps the announcement current until ctx ends.
func (in *Instance) announce(ctx context.Context) {
	var last time.Time
	var lastOpen bool
	var lastRoot string
	t := time.NewTicker(announceCheck)
	defer t.Stop()
	for {
		free, err := in.Deployer.FreeUnits(ctx)
		open := err == nil && free > 0
		root, rerr := in.teeRoot(ctx)
		if rerr == nil && (last.IsZero() || in.now().Sub(last) >= announceEvery || open != lastOpen || root != lastRoot) {
			evt, err := in.Announcement(ctx)
			if err == nil {
				err = in.Bot.Publish(ctx, evt, in.parts.Relays)
			}
			if err != nil && ctx.Err() == nil {
				in.log.Warn("announcing", "err", err)
			} else if err == nil {
				last, lastOpen, lastRoot = in.now(), open, root
			}
		} else if rerr != nil && ctx.Err() == nil {
			in.log.Warn("attesting", "err", rerr)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
