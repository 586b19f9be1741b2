package nip

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"time"

	"github.com/nbd-wtf/go-nostr"
)

// KindAnnouncement is the instance announcement (replaceable).
const KindAnnouncement = 13793

// Repo is enclaved's repository, the r tag of announcements and releases.
const Repo = "https://github.com/enclaved/enclaved"

// AnnouncedPCRs are the PCRs an announcement lists in x tags.
var AnnouncedPCRs = []uint{0, 1, 2, 4, 8}

// Announcement is what an instance announces.
type Announcement struct {
	Name, Version string
	Mode          string // t: prod, debug or dev
	InboxRelay    string // where to reach the bot
	Open          bool   // capacity free for new containers
	Expires       time.Time
	TEERoot       string // the kind-23793 event as JSON
	PCRs          map[uint][]byte
	// Build, Instance and Releases are signed events the operator supplies
	// (JSON); each adds its signer as a p tag.
	Build, Instance string
	BuildPubkey     string
	InstancePubkey  string
	Releases        []nostr.Event
	// Ours, ignored by explorers: price, unit and capacity.
	PriceMsat           int64
	Unit                string
	FreeUnits, Capacity int64
	// The egress policy: what the instance itself dials (nil: not
	// enforced, a dev instance), what containers may ask for, and whether
	// containers are confined to it.
	InstanceEgress     []string
	ContainerEgress    []string
	ContainersConfined bool
}

// AnnouncementEvent builds the unsigned kind-13793 announcement in the
// format explorers read (r, name, v, t, relay, expiration, alt, o, comment,
// tee_root, x PCRn; build/instance/release with p tags), plus price, unit,
// capacity and egress tags of ours.
func AnnouncementEvent(a Announcement, now nostr.Timestamp) nostr.Event {
	open, comment := "false", "Closed: no free capacity"
	if a.Open {
		open, comment = "true", "Open for new containers"
	}
	tags := nostr.Tags{
		{"r", Repo},
		{"name", a.Name},
		{"v", a.Version},
		{"t", a.Mode},
		{"relay", a.InboxRelay},
		{"expiration", strconv.FormatInt(a.Expires.Unix(), 10)},
		{"alt", "enclaved server"},
		{"o", open},
		{"comment", comment},
		{"tee_root", a.TEERoot},
	}
	for _, i := range AnnouncedPCRs {
		if p, ok := a.PCRs[i]; ok {
			tags = append(tags, nostr.Tag{"x", hex.EncodeToString(p), fmt.Sprintf("PCR%d", i)})
		}
	}
	if a.Build != "" {
		tags = append(tags, nostr.Tag{"build", a.Build}, nostr.Tag{"p", a.BuildPubkey, "builder"})
	}
	if a.Instance != "" {
		tags = append(tags, nostr.Tag{"instance", a.Instance}, nostr.Tag{"p", a.InstancePubkey, "launcher"})
	}
	for _, r := range a.Releases {
		tags = append(tags, nostr.Tag{"release", r.String()}, nostr.Tag{"p", r.PubKey, "releaser"})
	}
	tags = append(tags,
		nostr.Tag{"price", strconv.FormatInt(a.PriceMsat, 10), "msat/unit-hour"},
		nostr.Tag{"unit", a.Unit},
		nostr.Tag{"capacity", strconv.FormatInt(a.FreeUnits, 10), strconv.FormatInt(a.Capacity, 10)},
	)
	// ["egress", "instance", "enforced"|"unenforced", pattern...] and
	// ["egress", "containers", "confined"|"unconfined", pattern...]; no
	// pattern means nothing may be reached.
	inst := nostr.Tag{"egress", "instance", "unenforced"}
	if a.InstanceEgress != nil {
		inst = append(nostr.Tag{"egress", "instance", "enforced"}, a.InstanceEgress...)
	}
	ctr := nostr.Tag{"egress", "containers", "unconfined"}
	if a.ContainersConfined {
		ctr[2] = "confined"
	}
	tags = append(tags, inst, append(ctr, a.ContainerEgress...))
	return nostr.Event{Kind: KindAnnouncement, CreatedAt: now,
		Content: "enclaved: rent a container in this enclave over Nostr, pay over Lightning", Tags: tags}
}
