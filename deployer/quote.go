package deployer

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/enclaved/enclaved/egress"

	"github.com/enclaved/enclaved/billing"
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
func busyError(what string, wait time.Duration) *UserError {
	return &UserError{fmt.Sprintf("busy: %s; try again in %s", what, Human(max(wait, time.Minute)))}
}

// ImageResolver pins image references (Resolver in production).
type ImageResolver interface {
	Resolve(ctx context.Context, ref string) (Image, error)
}

// Issuer issues invoices (billing.Invoices): created at the node,
// recorded, and saved before they are handed out.
type Issuer interface {
	Issue(ctx context.Context, r billing.Request) (billing.Invoice, error)
}

// Quoter turns a deploy command into a quote with a Lightning invoice.
type Quoter struct {
	D        *Deployer
	Images   ImageResolver
	Invoices Issuer
	Pricing  Pricing
}

// Quote is what the renter is offered.
type Quote struct {
	ContainerID string
	Name        string
	Image       Image
	Units       int64
	Hours       int64
	Per         Unit // resources of one unit
	PriceMsat   int64
	TotalMsat   int64
	Invoice     billing.Invoice
}

// UserError is a reason a request is refused, meant for the renter.
type UserError struct{ Msg string }

func (e *UserError) Error() string { return e.Msg }

// A renter waits for a quote: the registry gets this long before the
// answer is an error (the node's own bound is billing's).
const resolveTimeout = 30 * time.Second

// Quote resolves the image, checks it fits the units' disk and the free
// capacity, records the quoted container and issues its invoice.
func (q *Quoter) Quote(ctx context.Context, owner, channel string, cmd nip.Command) (Quote, error) {
	d := q.D
	// Refused before the registry is asked, when too much unpaid work
	// waits (the insert below checks again, atomically).
	if q.Pricing.OpenQuotes > 0 || q.Pricing.OpenQuotesPerSender > 0 {
		open := d.now().Add(-q.Pricing.QuoteExpiry).UnixMilli()
		var mine, all int64
		if err := d.db.QueryRowContext(ctx, `SELECT COUNT(CASE WHEN owner = ? THEN 1 END), COUNT(*)
			FROM containers WHERE state = 'quoted' AND created_at > ?`, owner, open).Scan(&mine, &all); err != nil {
			return Quote{}, err
		}
		if (q.Pricing.OpenQuotes > 0 && all >= q.Pricing.OpenQuotes) || (q.Pricing.OpenQuotesPerSender > 0 && mine >= q.Pricing.OpenQuotesPerSender) {
			return Quote{}, q.refusal(ctx, owner, "", open)
		}
	}
	rctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	img, err := q.Images.Resolve(rctx, cmd.Image)
	cancel()
	if err != nil {
		return Quote{}, err
	}
	units, hours := int64(cmd.Units), int64(cmd.Hours)
	if disk := units * d.cfg.Unit.DiskBytes; d.cfg.Unit.DiskBytes > 0 && img.Size > disk {
		return Quote{}, &UserError{fmt.Sprintf("%s takes %d MiB of disk; %d unit(s) give %d MiB: ask for more units",
			cmd.Image, img.Size>>20, units, disk>>20)}
	}
	free, err := d.FreeUnits(ctx)
	if err != nil {
		return Quote{}, err
	}
	if units > free {
		return Quote{}, &UserError{fmt.Sprintf("this instance has %d free unit(s) of %d; you asked for %d", max(free, 0), d.cfg.CapacityUnits, units)}
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
	envJSON, _ := json.Marshal(env)
	egress, err := d.checkEgress(cmd.Egress)
	if err != nil {
		return Quote{}, err
	}
	egressJSON, _ := json.Marshal(egress)
	price := q.Pricing.PriceMsatPerUnitHour
	total := units * price * hours
	if total <= 0 {
		return Quote{}, &UserError{"this instance has no price set"}
	}
	now := d.now()
	// The caps on open quotes are checked in the insert itself, so
	// concurrent deploys cannot overshoot them.
	open := now.Add(-q.Pricing.QuoteExpiry).UnixMilli()
	res, err := d.db.ExecContext(ctx, `INSERT INTO containers (id, name, owner, channel, image, image_ref, image_size, image_volumes,
		units, price_msat, env, pubkey, state, created_at, updated_at, egress, http_port)
		SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'quoted', ?, ?, ?, ?
		WHERE NOT EXISTS (SELECT 1 FROM containers WHERE name = ?)
		AND (? = 0 OR (SELECT COUNT(*) FROM containers WHERE state = 'quoted' AND created_at > ?) < ?)
		AND (? = 0 OR (SELECT COUNT(*) FROM containers WHERE state = 'quoted' AND created_at > ? AND owner = ?) < ?)`,
		id, name, owner, channel, cmd.Image, img.Pinned, img.Size, img.HasVolumes, units, price, string(envJSON),
		d.cfg.ContainerKey(id), now.UnixMilli(), now.UnixMilli(), string(egressJSON), cmd.Port, name,
		q.Pricing.OpenQuotes, open, q.Pricing.OpenQuotes, q.Pricing.OpenQuotesPerSender, open, owner, q.Pricing.OpenQuotesPerSender)
	if err != nil {
		if strings.Contains(err.Error(), "UNIQUE") {
			return Quote{}, &UserError{fmt.Sprintf("the name %s is taken; pick another with name=", name)}
		}
		return Quote{}, err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return Quote{}, q.refusal(ctx, owner, name, open)
	}
	inv, err := q.Invoices.Issue(ctx, billing.Request{ContainerID: id, Purpose: "deploy", AmountMsat: total,
		Memo: fmt.Sprintf("enclaved quote %s: %s, %d unit(s) for %d h", id, name, units, hours), Expiry: q.Pricing.QuoteExpiry, Requester: owner})
	if err != nil {
		d.setState(ctx, id, StateFailed, "invoice: "+err.Error(), nil)
		return Quote{}, fmt.Errorf("quote %s: %w", id, err)
	}
	return Quote{ContainerID: id, Name: name, Image: img, Units: units, Hours: hours, Per: d.cfg.Unit,
		PriceMsat: price, TotalMsat: total, Invoice: inv}, nil
}

// checkEgress normalises the requested destinations to host:port and
// checks each against the operator's policy.
func (d *Deployer) checkEgress(req []string) ([]string, error) {
	out := make([]string, 0, len(req))
	for _, r := range req {
		host, port, err := egress.SplitDestination(r)
		if err != nil {
			return nil, &UserError{err.Error()}
		}
		hp := net.JoinHostPort(host, strconv.Itoa(port))
		if !egress.Allowed(d.cfg.EgressPolicy, hp) {
			if len(d.cfg.EgressPolicy) == 0 {
				return nil, &UserError{"this instance lets containers reach no outside host; deploy without egress="}
			}
			return nil, &UserError{fmt.Sprintf("egress to %s is outside this instance's policy (%s)", hp, strings.Join(d.cfg.EgressPolicy, ", "))}
		}
		if !slices.Contains(out, hp) {
			out = append(out, hp)
		}
	}
	if _, err := egress.NewPlan(out); err != nil {
		return nil, &UserError{err.Error()}
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
func (q *Quoter) refusal(ctx context.Context, owner, name string, open int64) error {
	d := q.D
	var taken bool
	if err := d.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM containers WHERE name = ?)`, name).Scan(&taken); err != nil {
		return err
	}
	if taken {
		return &UserError{fmt.Sprintf("the name %s is taken; pick another with name=", name)}
	}
	var mine, all int64
	var myOldest, oldest sql.NullInt64
	if err := d.db.QueryRowContext(ctx, `SELECT COUNT(CASE WHEN owner = ? THEN 1 END), COUNT(*), MIN(CASE WHEN owner = ? THEN created_at END), MIN(created_at)
		FROM containers WHERE state = 'quoted' AND created_at > ?`, owner, owner, open).Scan(&mine, &all, &myOldest, &oldest); err != nil {
		return err
	}
	// until is how long until the oldest of those quotes expires.
	until := func(created sql.NullInt64) time.Duration {
		if !created.Valid {
			return q.Pricing.QuoteExpiry
		}
		return time.UnixMilli(created.Int64).Add(q.Pricing.QuoteExpiry).Sub(d.now())
	}
	if q.Pricing.OpenQuotesPerSender > 0 && mine >= q.Pricing.OpenQuotesPerSender {
		return busyError(fmt.Sprintf("you have %d quotes waiting for payment (at most %d); pay or `delete` one", mine, q.Pricing.OpenQuotesPerSender), until(myOldest))
	}
	return busyError(fmt.Sprintf("%d quotes wait for payment on this instance", all), until(oldest))
}
