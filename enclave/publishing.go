package enclave

import (
	"context"
	"slices"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/deployer"
	"github.com/enclaved/enclaved/publish"
)

// The instance's publishers (package publish), wired to its parts; Run
// runs them once the zap service is set up.

// announcer keeps the instance's announcement current.
func (in *Instance) announcer() *publish.Announcer {
	return &publish.Announcer{Instance: announced{in}, Publisher: in.Bot, Relays: in.announceRelays(), Now: in.now, Log: in.log}
}

// announceRelays are where the instance's public events go: its relays,
// then nostr.announce_relays (where explorers read).
func (in *Instance) announceRelays() []string {
	out := slices.Clone(in.parts.Relays)
	for _, r := range in.cfg.Nostr.AnnounceRelays {
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out
}

// announced is the instance as its announcer sees it.
type announced struct{ in *Instance }

func (a announced) FreeUnits(ctx context.Context) (int64, error) { return a.in.Deployer.FreeUnits(ctx) }
func (a announced) TEERoot(ctx context.Context) (string, error)  { return a.in.teeRoot(ctx) }
func (a announced) Announcement(ctx context.Context) (nostr.Event, error) {
	return a.in.Announcement(ctx)
}

// profiles keeps the containers' profiles and status events current.
func (in *Instance) profiles() *publish.Profiles {
	key := in.parts.Key
	return &publish.Profiles{Containers: liveContainers{in.Deployer, in.now},
		Instance: key.Keys(), InstanceNpub: key.Npub(), InstancePubkey: key.PublicKey(),
		ContainerKey: func(id string) publish.Signer { return key.ContainerKey(id).Keys() },
		Address:      in.Zaps.Address, TEERoot: in.TEERoot, Dev: in.dev,
		Publisher: in.Bot, Relays: in.announceRelays(), Now: in.now, Log: in.log}
}

// liveContainers lists the deployer's live containers for their profiles.
type liveContainers struct {
	d   *deployer.Deployer
	now func() time.Time
}

func (l liveContainers) Live(ctx context.Context) ([]publish.Container, error) {
	recs, err := l.d.Records.Live(ctx)
	if err != nil {
		return nil, err
	}
	u, now := l.d.Unit(), l.now()
	out := make([]publish.Container, 0, len(recs))
	for _, r := range recs {
		out = append(out, publish.Container{ID: r.ID, Name: r.Name, Owner: r.Owner, Pubkey: r.Pubkey,
			ImageRef: r.ImageRef, State: r.State, Units: r.Units, PriceMsat: r.PriceMsat, BalanceMsat: r.BalanceAt(now),
			NanoCPUs: r.Units * u.NanoCPUs, MemoryBytes: r.Units * u.MemoryBytes, AdminPublic: r.AdminPublic})
	}
	return out, nil
}
