package publish

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/nip"
)

// Profile publication: a container's kind-0 profile and kind-63797
// status are republished within ProfileScan of a state change, at most
// every ProfileBalanceEvery for balance changes alone (metering moves
// balances every minute), and at least every StatusEvery, so that a status
// with a valid certificate (CertValidity) is always among the last 3 h of
// events, where upstream's clients look.
const (
	ProfileScan         = 5 * time.Second
	ProfileBalanceEvery = 10 * time.Minute
	StatusEvery         = time.Hour
)

// Container is what a container's profile and status say about it.
type Container struct {
	ID, Name, Owner, Pubkey string // Owner and Pubkey hex
	ImageRef, State         string
	Units, PriceMsat        int64
	BalanceMsat             int64
	// NanoCPUs and MemoryBytes are its units' whole share.
	NanoCPUs, MemoryBytes int64
	// AdminPublic: its owner agreed at deploy (admin=yes) to be named in
	// public; otherwise the owner appears in no event.
	AdminPublic bool
}

// Containers lists the containers whose profiles are kept.
type Containers interface {
	Live(ctx context.Context) ([]Container, error)
}

// Profiles keeps every live container's kind-0 profile and kind-63797
// status current.
type Profiles struct {
	Containers Containers
	// Instance signs the containers' certificates; InstanceNpub and
	// InstancePubkey name it.
	Instance                     Signer
	InstanceNpub, InstancePubkey string
	// ContainerKey signs a container's own events, by record id.
	ContainerKey func(id string) Signer
	// Address is the lightning address (and NIP-05 name) of a container
	// on this instance.
	Address func(name string) string
	// TEERoot (optional) is the instance's kind-23793 attestation event
	// (JSON), carried by status events.
	TEERoot func(ctx context.Context) (string, error)
	// Dev marks every event t=dev (attest.IsDev).
	Dev       bool
	Publisher Publisher
	Relays    []string
	Now       func() time.Time
	Log       *slog.Logger
}

type published struct {
	state   string
	balance int64
	at      time.Time
}

// Run publishes until ctx ends.
func (p *Profiles) Run(ctx context.Context) {
	last := map[string]published{}
	t := time.NewTicker(ProfileScan)
	defer t.Stop()
	for {
		if err := p.scan(ctx, last); err != nil && ctx.Err() == nil {
			p.Log.Warn("publishing container profiles", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (p *Profiles) scan(ctx context.Context, last map[string]published) error {
	cs, err := p.Containers.Live(ctx)
	if err != nil {
		return err
	}
	now := p.Now()
	for _, c := range cs {
		seen, ok := last[c.ID]
		if ok && seen.state == c.State && now.Sub(seen.at) < StatusEvery && (seen.balance == c.BalanceMsat || now.Sub(seen.at) < ProfileBalanceEvery) {
			continue
		}
		profile, err := p.Profile(ctx, c)
		if err != nil {
			return err
		}
		status, err := p.Status(ctx, c)
		if err != nil {
			return err
		}
		for _, evt := range []nostr.Event{profile, status} {
			if err := p.Publisher.Publish(ctx, evt, p.Relays); err != nil {
				return err
			}
		}
		last[c.ID] = published{state: c.State, balance: c.BalanceMsat, at: now}
	}
	return nil
}

// Profile is a container's kind-0 profile, signed by its own key: its
// name, an about with image, resources, price, state, owner (only if the
// owner agreed to be named) and instance, and its lightning address and
// NIP-05 name on this instance.
func (p *Profiles) Profile(ctx context.Context, c Container) (nostr.Event, error) {
	owner := ""
	if c.AdminPublic {
		owner = "\nowner: " + nip.Npub(c.Owner)
	}
	about := fmt.Sprintf("A container rented on enclaved instance %s.\nimage: %s\nresources: %d unit(s) = %.2f CPU, %d MiB memory\nprice: %d msat per unit-hour\nstate: %s, balance %d sats%s\nZap it to keep it running.",
		p.InstanceNpub, c.ImageRef, c.Units, float64(c.NanoCPUs)/1e9, c.MemoryBytes>>20,
		c.PriceMsat, c.State, c.BalanceMsat/1000, owner)
	addr := p.Address(c.Name)
	content, err := json.Marshal(map[string]string{"name": c.Name, "about": about, "lud16": addr, "nip05": addr})
	if err != nil {
		return nostr.Event{}, err
	}
	evt := nostr.Event{Kind: nostr.KindProfileMetadata, CreatedAt: nostr.Timestamp(p.Now().Unix()), Content: string(content),
		Tags: nostr.Tags{{"t", "enclaved-container"}}}
	p.tagMode(&evt)
	err = p.ContainerKey(c.ID).SignEvent(ctx, &evt)
	return evt, err
}

// CertValidity is how long a container certificate is valid (upstream's
// 3 h); certificates are issued anew with every status event.
const CertValidity = nip.ContainerCertTTL

// Status is a container's kind-63797 status event, signed by its own key,
// carrying the instance's certificate for that key (kind 23797, signed by
// the instance key) and, once the instance has an attestation, its
// tee_root; upstream's tags too (nip.ContainerStatus): its own key as the
// app's, and its owner as admin only if the owner agreed.
func (p *Profiles) Status(ctx context.Context, c Container) (nostr.Event, error) {
	now := nostr.Timestamp(p.Now().Unix())
	cert := nip.ContainerCert(c.Pubkey, c.ImageRef, p.Now().Add(CertValidity), now)
	p.tagMode(&cert)
	if err := p.Instance.SignEvent(ctx, &cert); err != nil {
		return nostr.Event{}, err
	}
	certJSON, err := json.Marshal(cert)
	if err != nil {
		return nostr.Event{}, err
	}
	teeRoot := ""
	if p.TEERoot != nil {
		if teeRoot, err = p.TEERoot(ctx); err != nil {
			return nostr.Event{}, err
		}
	}
	st := nip.Status{Instance: p.InstancePubkey, TEERoot: teeRoot, TEECert: string(certJSON), State: c.State,
		BalanceSats: c.BalanceMsat / 1000, Image: c.ImageRef, App: c.Pubkey}
	if c.AdminPublic {
		st.Admin = c.Owner
	}
	evt := nip.ContainerStatus(st, now)
	p.tagMode(&evt)
	err = p.ContainerKey(c.ID).SignEvent(ctx, &evt)
	return evt, err
}

// tagMode marks an event of a dev instance with t=dev.
func (p *Profiles) tagMode(evt *nostr.Event) {
	if p.Dev {
		evt.Tags = append(evt.Tags, nostr.Tag{"t", "dev"})
	}
}
