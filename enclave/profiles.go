package enclave

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/nip"
	"github.com/enclaved/enclaved/records"
)

// Profile publication: a container's kind-0 profile is republished within
// profileScan of a state change, and at most every profileBalanceEvery for
// balance changes alone (metering moves balances every minute).
const (
	profileScan         = 5 * time.Second
	profileBalanceEvery = 10 * time.Minute
)

type published struct {
	state   string
	balance int64
	at      time.Time
}

// publishProfiles keeps every live container's kind-0 profile current.
func (in *Instance) publishProfiles(ctx context.Context) {
	last := map[string]published{}
	t := time.NewTicker(profileScan)
	defer t.Stop()
	for {
		if err := in.scanProfiles(ctx, last); err != nil && ctx.Err() == nil {
			in.log.Warn("publishing container profiles", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (in *Instance) scanProfiles(ctx context.Context, last map[string]published) error {
	recs, err := in.Deployer.Records.Live(ctx)
	if err != nil {
		return err
	}
	now := in.now()
	for _, rec := range recs {
		p, seen := last[rec.ID]
		if seen && p.state == rec.State && (p.balance == rec.BalanceMsat || now.Sub(p.at) < profileBalanceEvery) {
			continue
		}
		profile, err := in.ContainerProfile(ctx, rec)
		if err != nil {
			return err
		}
		status, err := in.ContainerStatus(ctx, rec)
		if err != nil {
			return err
		}
		for _, evt := range []nostr.Event{profile, status} {
			if err := in.Bot.Publish(ctx, evt, in.parts.Relays); err != nil {
				return err
			}
		}
		last[rec.ID] = published{state: rec.State, balance: rec.BalanceMsat, at: now}
	}
	return nil
}

// ContainerProfile is a container's kind-0 profile, signed by its own key:
// its name, an about with image, resources, price, state, owner and
// instance, and its lightning address and NIP-05 name on this instance.
func (in *Instance) ContainerProfile(ctx context.Context, rec records.Record) (nostr.Event, error) {
	u := in.Deployer.Unit()
	about := fmt.Sprintf("A container rented on enclaved instance %s.\nimage: %s\nresources: %d unit(s) = %.2f CPU, %d MiB memory\nprice: %d msat per unit-hour\nstate: %s, balance %d sats\nowner: %s\nZap it to keep it running.",
		in.parts.Key.Npub(), rec.ImageRef, rec.Units, float64(rec.Units*u.NanoCPUs)/1e9, rec.Units*u.MemoryBytes>>20,
		rec.PriceMsat, rec.State, rec.BalanceMsat/1000, nip.Npub(rec.Owner))
	addr := in.Zaps.Address(rec.Name)
	content, err := json.Marshal(map[string]string{"name": rec.Name, "about": about, "lud16": addr, "nip05": addr})
	if err != nil {
		return nostr.Event{}, err
	}
	evt := nostr.Event{Kind: nostr.KindProfileMetadata, CreatedAt: nostr.Timestamp(in.now().Unix()), Content: string(content),
		Tags: nostr.Tags{{"t", "enclaved-container"}}}
	in.tagMode(&evt)
	err = in.parts.Key.ContainerKey(rec.ID).Keys().SignEvent(ctx, &evt)
	return evt, err
}

// certValidity is how long a container certificate is valid; certificates
// are issued anew with every status event.
const certValidity = 7 * 24 * time.Hour

// ContainerStatus is a container's kind-63797 status event, signed by its
// own key, carrying the instance's certificate for that key (kind 23797,
// signed by the instance key) and, once the instance has an attestation,
// its tee_root.
func (in *Instance) ContainerStatus(ctx context.Context, rec records.Record) (nostr.Event, error) {
	now := nostr.Timestamp(in.now().Unix())
	cert := nip.ContainerCert(rec.Pubkey, rec.ImageRef, in.now().Add(certValidity), now)
	in.tagMode(&cert)
	if err := in.parts.Key.Keys().SignEvent(ctx, &cert); err != nil {
		return nostr.Event{}, err
	}
	certJSON, err := json.Marshal(cert)
	if err != nil {
		return nostr.Event{}, err
	}
	teeRoot := ""
	if in.TEERoot != nil {
		if teeRoot, err = in.TEERoot(ctx); err != nil {
			return nostr.Event{}, err
		}
	}
	evt := nip.ContainerStatus(in.parts.Key.PublicKey(), teeRoot, string(certJSON), rec.State, rec.BalanceMsat/1000, rec.ImageRef, now)
	in.tagMode(&evt)
	err = in.parts.Key.ContainerKey(rec.ID).Keys().SignEvent(ctx, &evt)
	return evt, err
}

// tagMode marks an event of a dev instance with t=dev.
func (in *Instance) tagMode(evt *nostr.Event) {
	if in.dev {
		evt.Tags = append(evt.Tags, nostr.Tag{"t", "dev"})
	}
}
