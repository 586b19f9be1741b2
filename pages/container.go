package pages

import (
	"html/template"
	"strings"
	"time"

	"github.com/enclaved/enclaved/deployer"
	"github.com/enclaved/enclaved/httpapi"
	"github.com/enclaved/enclaved/money"
	"github.com/enclaved/enclaved/records"
)

// containerView is a container's public page: what GET
// /api/v1/containers/{npub} says, in words, and how to pay it.
type containerView struct {
	page
	Name, State, Image string
	Running            bool
	Units              int64
	Price              string // per hour, for its units, as quoted
	Balance            string
	Left               string // running time the balance pays for
	PaidUntil          string // running containers only
	Npub               string
	NostrURI           template.URL
	Address            string // lightning address; "" while it cannot be zapped
	LNURL              string
	LightningURI       template.URL
	LNURLQR            template.HTML
	Page               string // its own HTTP page, if it serves one
	InstanceNpub       string
	Topup              string // the DM that asks for a top-up invoice
}

// containerPage reads rec's page at now; links and lnurl say how it is
// paid ("" when it cannot be).
func containerPage(info httpapi.Instance, rec records.Record, links deployer.Links, lnurl string, now time.Time) (containerView, error) {
	v := containerView{page: page{Title: rec.Name + " on enclaved"},
		Name: rec.Name, State: rec.State, Image: rec.ImageRef, Running: rec.State == records.StateRunning, Units: rec.Units,
		Price:   sats(money.Rate(rec.Units, rec.PriceMsat)),
		Balance: sats(rec.BalanceAt(now)), Left: money.Human(rec.LeftAt(now)),
		Npub: rec.Npub(), NostrURI: template.URL("nostr:" + rec.Npub()),
		Address: links.Address, Page: links.Page, InstanceNpub: info.Npub,
		Topup: "topup " + rec.Name + " 100"}
	if t := rec.PaidUntil(); !t.IsZero() {
		v.PaidUntil = when(t)
	}
	if lnurl != "" {
		// LUD-01: bech32 in a QR code SHOULD be uppercase (denser
		// alphanumeric mode); wallets read either case.
		qr, err := qrSVG(strings.ToUpper(lnurl), "the container's LNURL")
		if err != nil {
			return v, err
		}
		v.LNURL, v.LightningURI, v.LNURLQR = lnurl, template.URL("lightning:"+lnurl), qr
	}
	return v, nil
}

// notFoundView is the page of a name that has no public page here.
type notFoundView struct {
	page
	Target string
	Npub   string // the instance's
}
