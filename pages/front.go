package pages

import (
	"encoding/json"
	"fmt"
	"html/template"
	"strconv"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/httpapi"
	"github.com/enclaved/enclaved/nip"
)

// page is what every page's layout reads.
type page struct {
	Title string
}

// frontView is the front page, read from the announcement and the
// instance's public facts.
type frontView struct {
	page
	Name, Version string
	Mode          string // prod, debug or dev (the announcement's t tag)
	Signed        bool   // the announcement carries a signature
	Attested      bool   // and an attestation (tee_root)
	Expires       string // when the attestation (and so the announcement) expires
	PCRs          []pcr
	Signatures    []signature
	Npub          string
	NostrURI      template.URL
	NpubQR        template.HTML
	Relays        []string
	Price         string // per unit-hour
	Unit          string
	DiskEnforced  bool
	Free, Total   int64
	Open          bool
	DeployDM      string
	Egress        egressView
}

type pcr struct {
	Index string
	Hex   string
}

// signature is a signed event the announcement embeds: who signed what.
type signature struct {
	Role   string // release, build, instance
	Signer string // npub
	Signs  string // what it vouches for, in words
	Valid  bool   // its Schnorr signature checks out
	ID     string
}

type egressView struct {
	InstanceEnforced bool
	Instance         []string
	Confined         bool
	Containers       []string
}

// frontPage reads the front page from the announcement evt and info.
func frontPage(info httpapi.Instance, evt nostr.Event) (frontView, error) {
	v := frontView{page: page{Title: "enclaved instance"}, Npub: info.Npub, Relays: info.Relays,
		DiskEnforced: info.Unit.DiskEnforced, Signed: evt.Sig != ""}
	v.NostrURI = template.URL("nostr:" + info.Npub)
	qr, err := qrSVG("nostr:"+info.Npub, "the instance's npub")
	if err != nil {
		return v, err
	}
	v.NpubQR = qr
	for _, t := range evt.Tags {
		if len(t) < 2 {
			continue
		}
		switch t[0] {
		case "name":
			v.Name = t[1]
		case "v":
			v.Version = t[1]
		case "t":
			v.Mode = t[1]
		case "o":
			v.Open = t[1] == "true"
		case "tee_root":
			v.Attested = t[1] != ""
		case "expiration":
			if n, err := strconv.ParseInt(t[1], 10, 64); err == nil && n > 0 {
				v.Expires = when(time.Unix(n, 0))
			}
		case "x":
			if len(t) >= 3 {
				v.PCRs = append(v.PCRs, pcr{Index: t[2], Hex: t[1]})
			}
		case "build":
			v.Signatures = append(v.Signatures, embedded("build", t[1], "PCR8: the certificate the enclave image was signed with at build time"))
		case "instance":
			v.Signatures = append(v.Signatures, embedded("instance", t[1], "PCR4: the EC2 instance the enclave was launched on"))
		case "release":
			v.Signatures = append(v.Signatures, embedded("release", t[1], "PCR0, PCR1 and PCR2: the enclave image, kernel and application of this release"))
		case "price":
			if n, err := strconv.ParseInt(t[1], 10, 64); err == nil {
				v.Price = sats(n)
			}
		case "unit":
			v.Unit = t[1]
		case "capacity":
			if len(t) >= 3 {
				v.Free, _ = strconv.ParseInt(t[1], 10, 64)
				v.Total, _ = strconv.ParseInt(t[2], 10, 64)
			}
		case "egress":
			if len(t) >= 3 && t[1] == "instance" {
				v.Egress.InstanceEnforced = t[2] == "enforced"
				v.Egress.Instance = t[3:]
			} else if len(t) >= 3 && t[1] == "containers" {
				v.Egress.Confined = t[2] == "confined"
				v.Egress.Containers = t[3:]
			}
		}
	}
	if v.Mode == "" {
		return v, fmt.Errorf("announcement %s has no t tag", evt.ID)
	}
	if v.Name != "" {
		v.Title = v.Name + ": an enclaved instance"
	}
	v.DeployDM = "deploy <image> units=1 hours=1"
	return v, nil
}

// embedded reads a signature event embedded as JSON in an announcement
// tag. The instance checked it when it loaded it; the page says again
// whether its signature holds, and who made it.
func embedded(role, raw, signs string) signature {
	s := signature{Role: role, Signs: signs}
	var e nostr.Event
	if err := json.Unmarshal([]byte(raw), &e); err != nil {
		s.Signer = "(unreadable event)"
		return s
	}
	s.Signer, s.ID = nip.Npub(e.PubKey), e.ID
	s.Valid, _ = e.CheckSignature()
	if role == "release" {
		if v := nip.TagValue(&e, "v"); v != "" {
			s.Signs += " (version " + v + ")"
		}
	}
	return s
}

// sats formats msat as sats, keeping the millisatoshis when there are any.
func sats(msat int64) string {
	if msat%1000 == 0 {
		return fmt.Sprintf("%d sats", msat/1000)
	}
	return fmt.Sprintf("%d.%03d sats", msat/1000, msat%1000)
}

// when formats a moment for readers: UTC, to the minute.
func when(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") }
