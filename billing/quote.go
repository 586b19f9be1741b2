package billing

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/enclaved/enclaved/egress"
	"github.com/enclaved/enclaved/images"
	"github.com/enclaved/enclaved/money"
	"github.com/enclaved/enclaved/records"

	"github.com/enclaved/enclaved/nip"
)

// Pricing is what the operator charges, and the bounds on unpaid work.
type Pricing struct {
	PriceMsatPerUnitHour int64
	QuoteExpiry          time.Duration // the invoice's expiry too
	// OpenQuotes caps quotes waiting for payment, instance-wide (0: no
	// cap) and per sender (0: no cap); OpenTopups caps top-up invoices
	// waiting per container (0: no cap).
	OpenQuotes, OpenQuotesPerSender, OpenTopups int64
}

// busyError is a refusal for now: too much unpaid work waits.
func busyError(what string, wait time.Duration) *records.UserError {
	return &records.UserError{Msg: fmt.Sprintf("busy: %s; try again in %s", what, money.Human(max(wait, time.Minute)))}
}

// ImageResolver pins image references (images.Resolver in production).
type ImageResolver interface {
	Resolve(ctx context.Context, ref string) (images.Image, error)
}

// Quoter turns a deploy command into a quote with a Lightning invoice,
// and a top-up into an invoice.
type Quoter struct {
	Records  *records.Store
	Images   ImageResolver
	Invoices *Invoices
	Pricing  Pricing
	// Unit is one unit's resources; CapacityUnits the instance's size.
	Unit          records.Unit
	CapacityUnits int64
	// ContainerKey returns the hex public key of a container's own Nostr
	// identity (enclave.Key.ContainerKey).
	ContainerKey func(id string) string
	// EgressPolicy is the operator's bound on what renters may ask their
	// containers to reach (egress.Allowed patterns); empty: nothing.
	EgressPolicy []string
	Now          func() time.Time
}

// Quote is what the renter is offered.
type Quote struct {
	ContainerID string
	Pubkey      string // the container's own key (hex; "" without ContainerKey)
	Name        string
	Image       images.Image
	Units       int64
	Hours       int64
	Per         records.Unit // resources of one unit
	PriceMsat   int64
	TotalMsat   int64
	Invoice     Invoice
}

// A renter waits for a quote: the registry gets this long before the
// answer is an error (the node's own bound is billing's).
const resolveTimeout = 30 * time.Second

// Quote resolves the image, checks it fits the units' disk and the free
// capacity, records the quoted container and issues its invoice.
func (q *Quoter) Quote(ctx context.Context, owner, channel string, cmd nip.Command) (Quote, error) {
	caps := records.QuoteCaps{Since: q.Now().Add(-q.Pricing.QuoteExpiry), All: q.Pricing.OpenQuotes, PerOwner: q.Pricing.OpenQuotesPerSender}
	// Refused before the registry is asked, when too much unpaid work
	// waits (the insert below checks again, atomically).
	if caps.All > 0 || caps.PerOwner > 0 {
		w, err := q.Records.QuotesWaiting(ctx, owner, "", caps.Since)
		if err != nil {
			return Quote{}, err
		}
		if (caps.All > 0 && w.All >= caps.All) || (caps.PerOwner > 0 && w.Mine >= caps.PerOwner) {
			return Quote{}, q.refusal(w, "")
		}
	}
	rctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	img, err := q.Images.Resolve(rctx, cmd.Image)
	cancel()
	if err != nil {
		return Quote{}, err
	}
	units, hours := int64(cmd.Units), int64(cmd.Hours)
	if disk := units * q.Unit.DiskBytes; q.Unit.DiskBytes > 0 && img.Size > disk {
		return Quote{}, &records.UserError{Msg: fmt.Sprintf("%s takes %d MiB of disk; %d unit(s) give %d MiB: ask for more units",
			cmd.Image, img.Size>>20, units, disk>>20)}
	}
	used, err := q.Records.UsedUnits(ctx, "")
	if err != nil {
		return Quote{}, err
	}
	if free := q.CapacityUnits - used; units > free {
		return Quote{}, &records.UserError{Msg: fmt.Sprintf("this instance has %d free unit(s) of %d; you asked for %d", max(free, 0), q.CapacityUnits, units)}
	}
	id, err := randomID()
	if err != nil {
		return Quote{}, err
	}
	name := cmd.Name
	if name == "" {
		name = defaultName(img.Ref, id)
	}
	env := make([][2]string, 0, len(cmd.Env))
	for _, e := range cmd.Env {
		env = append(env, [2]string{e.Key, e.Value})
	}
	egress, err := q.checkEgress(cmd.Egress)
	if err != nil {
		return Quote{}, err
	}
	price := q.Pricing.PriceMsatPerUnitHour
	total := units * price * hours
	if total <= 0 {
		return Quote{}, &records.UserError{Msg: "this instance has no price set"}
	}
	key := ""
	if q.ContainerKey != nil {
		key = q.ContainerKey(id)
	}
	ok, err := q.Records.InsertQuote(ctx, records.NewQuote{ID: id, Name: name, Owner: owner, Channel: channel, Image: cmd.Image,
		ImageRef: img.Pinned, ImageSize: img.Size, HasVolumes: img.HasVolumes, Units: units, PriceMsat: price, Env: env,
		Pubkey: key, Egress: egress, HTTPPort: cmd.Port, AdminPublic: cmd.Admin}, caps)
	if err != nil {
		return Quote{}, err
	}
	if !ok {
		w, err := q.Records.QuotesWaiting(ctx, owner, name, caps.Since)
		if err != nil {
			return Quote{}, err
		}
		return Quote{}, q.refusal(w, name)
	}
	inv, err := q.Invoices.Issue(ctx, Request{ContainerID: id, Purpose: "deploy", AmountMsat: total,
		Memo: fmt.Sprintf("enclaved quote %s: %s, %d unit(s) for %d h", id, name, units, hours), Expiry: q.Pricing.QuoteExpiry, Requester: owner})
	if err != nil {
		q.Records.Transition(ctx, id, records.StateFailed, "invoice: "+err.Error(), nil)
		return Quote{}, fmt.Errorf("quote %s: %w", id, err)
	}
	return Quote{ContainerID: id, Pubkey: key, Name: name, Image: img, Units: units, Hours: hours, Per: q.Unit,
		PriceMsat: price, TotalMsat: total, Invoice: inv}, nil
}

// checkEgress normalises the requested destinations to host:port and
// checks each against the operator's policy.
func (q *Quoter) checkEgress(req []string) ([]string, error) {
	out := make([]string, 0, len(req))
	for _, r := range req {
		host, port, err := egress.SplitDestination(r)
		if err != nil {
			return nil, &records.UserError{Msg: err.Error()}
		}
		hp := net.JoinHostPort(host, strconv.Itoa(port))
		if !egress.Allowed(q.EgressPolicy, hp) {
			if len(q.EgressPolicy) == 0 {
				return nil, &records.UserError{Msg: "this instance lets containers reach no outside host; deploy without egress="}
			}
			return nil, &records.UserError{Msg: fmt.Sprintf("egress to %s is outside this instance's policy (%s)", hp, strings.Join(q.EgressPolicy, ", "))}
		}
		if !slices.Contains(out, hp) {
			out = append(out, hp)
		}
	}
	if _, err := egress.NewPlan(out); err != nil {
		return nil, &records.UserError{Msg: err.Error()}
	}
	return out, nil
}

func randomID() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

// defaultName is the image's repository base name and part of the id.
func defaultName(ref, id string) string {
	repo, _, _ := strings.Cut(ref, "@")
	if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
		repo = repo[:i]
	}
	base := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' {
			return r
		}
		return '-'
	}, strings.ToLower(path.Base(repo)))
	base = strings.Trim(base, "-")
	if len(base) > 20 {
		base = base[:20]
	}
	if base == "" || base[0] < 'a' || base[0] > 'z' {
		base = "c" + base
	}
	return base + "-" + id[:6]
}

// refusal says why a quote was not recorded: its name is taken, or too
// many quotes wait for payment (the sender's, or the instance's).
func (q *Quoter) refusal(w records.Waiting, name string) error {
	if w.NameTaken {
		return &records.UserError{Msg: fmt.Sprintf("the name %s is taken; pick another with name=", name)}
	}
	// until is how long until the oldest of those quotes expires.
	until := func(created time.Time) time.Duration {
		if created.IsZero() {
			return q.Pricing.QuoteExpiry
		}
		return created.Add(q.Pricing.QuoteExpiry).Sub(q.Now())
	}
	if q.Pricing.OpenQuotesPerSender > 0 && w.Mine >= q.Pricing.OpenQuotesPerSender {
		return busyError(fmt.Sprintf("you have %d quotes waiting for payment (at most %d); pay or `delete` one", w.Mine, q.Pricing.OpenQuotesPerSender), until(w.MyOldest))
	}
	return busyError(fmt.Sprintf("%d quotes wait for payment on this instance", w.All), until(w.Oldest))
}

// Topup issues an invoice that credits the container with sats when paid;
// requester (hex pubkey) is who asked for it.
func (q *Quoter) Topup(ctx context.Context, rec records.Record, sats int64, requester string) (Invoice, error) {
	switch rec.State {
	case records.StateRemoved, records.StateExpired:
		return Invoice{}, &records.UserError{Msg: fmt.Sprintf("%s is %s; it cannot be topped up", rec.Name, rec.State)}
	case records.StateQuoted:
		// A quote starts only once its own invoice is paid: top-ups never
		// add up to a launch for less than the quote.
		return Invoice{}, &records.UserError{Msg: fmt.Sprintf("%s is not paid yet: pay its quote's invoice first; a topup adds running time to a container that was paid for", rec.Name)}
	}
	if q.Pricing.OpenTopups > 0 {
		now := q.Now()
		var open int64
		var first sql.NullInt64
		if err := q.Invoices.DB.QueryRowContext(ctx, `SELECT COUNT(*), MIN(expires_at) FROM invoices WHERE container_id = ? AND purpose = 'topup'
			AND settled_at IS NULL AND cancelled_at IS NULL AND expires_at > ?`, rec.ID, now.Unix()).Scan(&open, &first); err != nil {
			return Invoice{}, err
		}
		if open >= q.Pricing.OpenTopups {
			return Invoice{}, busyError(fmt.Sprintf("%s has %d top-up invoices waiting to be paid (at most %d); pay one of those", rec.Name, open, q.Pricing.OpenTopups),
				time.Unix(first.Int64, 0).Sub(now))
		}
	}
	return q.Invoices.Issue(ctx, Request{ContainerID: rec.ID, Purpose: "topup", AmountMsat: sats * 1000,
		Memo: fmt.Sprintf("enclaved topup %s: %s, %d sats", rec.ID, rec.Name, sats), Expiry: q.Pricing.QuoteExpiry, Requester: requester})
}
