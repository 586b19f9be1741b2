package enclave

import (
	"context"
	"fmt"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/attest"
	"github.com/enclaved/enclaved/nip"
)

// Announcement is the instance's kind-13793 announcement, signed.
func (in *Instance) Announcement(ctx context.Context) (nostr.Event, error) {
	root, err := in.teeRoot(ctx)
	if err != nil {
		return nostr.Event{}, err
	}
	in.mu.Lock()
	doc, expires := in.rootDoc, in.rootExpires
	in.mu.Unlock()
	evt, err := in.announcement(ctx, root, in.mode(doc), doc.PCRs, expires)
	if err != nil {
		return evt, err
	}
	err = in.parts.Key.Keys().SignEvent(ctx, &evt)
	return evt, err
}

// announcement is the unsigned announcement under the attestation event
// root (JSON), in mode, with the attested pcrs, expiring with the document.
func (in *Instance) announcement(ctx context.Context, root, mode string, pcrs map[uint][]byte, expires time.Time) (nostr.Event, error) {
	free, err := in.Deployer.FreeUnits(ctx)
	if err != nil {
		return nostr.Event{}, err
	}
	u := in.Deployer.Unit()
	var build, launch string
	if in.build.ID != "" {
		build = in.build.String()
	}
	if in.launch.ID != "" {
		launch = in.launch.String()
	}
	return nip.AnnouncementEvent(nip.Announcement{
		Build: build, BuildPubkey: in.build.PubKey, Instance: launch, InstancePubkey: in.launch.PubKey,
		Name: in.cfg.Instance.Name, Version: in.version, Mode: mode, InboxRelay: in.parts.Relays[0],
		Open: free > 0, Expires: expires, TEERoot: root, PCRs: pcrs,
		Releases:  in.releases,
		PriceMsat: in.cfg.Pricing.MsatPerUnitHour, FreeUnits: max(free, 0), Capacity: in.Deployer.Capacity(),
		InstanceEgress: in.parts.Egress, ContainerEgress: in.cfg.Instance.ContainerEgress, ContainersConfined: in.parts.Confiner != nil,
		Unit: fmt.Sprintf("%d millicpu, %d MiB memory, %d pids, %d MiB disk", u.NanoCPUs/1_000_000, u.MemoryBytes>>20, u.Pids, u.DiskBytes>>20),
	}, nostr.Timestamp(in.now().Unix())), nil
}

// pageAnnouncement is what the front page shows (pages.Announcer): the
// announcement as published, or, for an instance without an attester
// (which publishes none), the same event unsigned, with no attestation.
type pageAnnouncement struct{ in *Instance }

func (p pageAnnouncement) Announcement(ctx context.Context) (nostr.Event, error) {
	if p.in.parts.Attester != nil {
		return p.in.Announcement(ctx)
	}
	return p.in.announcement(ctx, "", attest.EventMode(nil, nil), nil, time.Time{})
}
