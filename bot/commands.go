package bot

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/enclaved/enclaved/deployer"
	"github.com/enclaved/enclaved/images"
	"github.com/enclaved/enclaved/money"
	"github.com/enclaved/enclaved/nip"
	"github.com/enclaved/enclaved/records"
)

// maxLogChars bounds the logs sent in one DM (the tail is kept).
const maxLogChars = 8000

const helpPointer = "Send `help` for the commands."

// Request is one command as its handler sees it, whatever carried it:
// a DM, a mention or an RPC request.
type Request struct {
	Cmd     nip.Command
	From    string      // the sender's hex pubkey
	Channel nip.Channel // how it came, and how owners' notices go back
	At      time.Time   // when the sender sent it (to the second)
	// Private: only the instance could read it (a DM); env values and
	// logs travel only privately.
	Private bool
}

// verb is how one command is answered.
type verb struct {
	// public is the answer when the command came publicly but must not
	// ("": it may come publicly).
	public func(nip.Command) string
	handle func(b *Bot, ctx context.Context, r Request) Answer
}

// verbs is every command the instance answers. Every user mistake gets
// a one-line reason; internal errors are logged and the user gets a
// short apology without details.
var verbs = map[nip.Verb]verb{
	nip.VerbHelp: {handle: func(b *Bot, ctx context.Context, _ Request) Answer {
		h := b.help(ctx)
		return done(h, h)
	}},
	nip.VerbInstance: {handle: func(b *Bot, ctx context.Context, _ Request) Answer { return b.instance(ctx) }},
	nip.VerbDeploy: {
		public: func(c nip.Command) string {
			if len(c.Env) == 0 {
				return ""
			}
			return "env values are accepted only by DM (NIP-17 or NIP-04), never in a public note. Send the same deploy by DM."
		},
		handle: (*Bot).deploy,
	},
	nip.VerbStatus: {handle: func(b *Bot, ctx context.Context, r Request) Answer { return b.status(ctx, r.From, r.Cmd.Target) }},
	nip.VerbTopup:  {handle: func(b *Bot, ctx context.Context, r Request) Answer { return b.topup(ctx, r.From, r.Cmd) }},
	nip.VerbLogs: {
		public: func(c nip.Command) string { return "logs are private: send `logs " + c.Target + "` by DM." },
		handle: (*Bot).logs,
	},
	nip.VerbStop:   {handle: (*Bot).lifecycle},
	nip.VerbStart:  {handle: (*Bot).lifecycle},
	nip.VerbDelete: {handle: (*Bot).lifecycle},
}

// answer runs the command in msg (a DM's or a mention's text).
func (b *Bot) answer(ctx context.Context, msg nip.Message) Answer {
	cmd, err := nip.ParseCommand(msg.Text)
	if err != nil {
		if errors.Is(err, nip.ErrEmpty) {
			h := b.help(ctx)
			return done(h, h)
		}
		return Answer{Text: err.Error() + ". " + helpPointer, Err: err.Error(), invalid: true}
	}
	return b.Do(ctx, Request{Cmd: cmd, From: msg.From, Channel: msg.Channel, At: time.Unix(int64(msg.CreatedAt), 0),
		Private: msg.Channel != nip.ChannelMention})
}

// Do answers one parsed command.
func (b *Bot) Do(ctx context.Context, r Request) Answer {
	v, ok := verbs[r.Cmd.Verb]
	if !ok {
		return Answer{Text: "unknown command. " + helpPointer, Err: "unknown command", invalid: true}
	}
	if v.public != nil && !r.Private {
		if refusal := v.public(r.Cmd); refusal != "" {
			return refused(refusal)
		}
	}
	return v.handle(b, ctx, r)
}

// logs answers an owner's logs command.
func (b *Bot) logs(ctx context.Context, req Request) Answer {
	cmd := req.Cmd
	return b.owned(ctx, req.From, cmd.Target, func(r records.Record) Answer {
		out, err := b.d.Logs(ctx, r.ID, cmd.Lines)
		var ue *records.UserError
		if errors.As(err, &ue) {
			return refused(ue.Msg)
		}
		if err != nil {
			return b.failure("logs", err)
		}
		if len(out) > maxLogChars {
			out = "…" + out[len(out)-maxLogChars:]
		}
		res := LogsResult{Name: r.Name, Lines: cmd.Lines, Logs: out}
		if strings.TrimSpace(out) == "" {
			return done(fmt.Sprintf("%s has written no output yet.", r.Name), res)
		}
		return done(fmt.Sprintf("logs of %s (last %d lines):\n%s", r.Name, cmd.Lines, out), res)
	})
}

// lifecycle carries out an owner's stop, start or delete of r, in the order
// the owner sent them (an older command arriving late is refused), and
// answers once the outcome is saved outside the enclave, so a restart
// cannot undo what the owner is told.
func (b *Bot) lifecycle(ctx context.Context, req Request) Answer {
	verb := req.Cmd.Verb
	return b.owned(ctx, req.From, req.Cmd.Target, func(r records.Record) Answer {
		return b.ownerCommand(ctx, req, verb, r)
	})
}

func (b *Bot) ownerCommand(ctx context.Context, req Request, verb nip.Verb, r records.Record) Answer {
	before, after, err := b.d.OwnerCommand(ctx, r.ID, string(verb), req.At)
	var stale *deployer.StaleError
	switch {
	case errors.As(err, &stale):
		return refused(stale.Error())
	case err != nil && verb == nip.VerbStart:
		a := b.fromErr(err)
		a.Text = fmt.Sprintf("%s did not start: %s", r.Name, a.Text)
		a.Err = a.Text
		return a
	case err != nil:
		return b.failure(string(verb), err)
	}
	b.saved(ctx, string(verb))
	res := LifecycleResult{Name: after.Name, Pubkey: after.Pubkey, State: after.State, BalanceMsat: after.BalanceAt(b.now())}
	if kept(after.State) {
		res.KeptUntil = b.d.RetainUntil(after).Unix()
	}
	return done(b.lifecycleText(verb, before, after), res)
}

func (b *Bot) lifecycleText(verb nip.Verb, before, after records.Record) string {
	switch verb {
	case nip.VerbStop:
		if before.State != records.StateRunning {
			return fmt.Sprintf("%s is %s, not running.", after.Name, after.State)
		}
		return fmt.Sprintf("%s is stopped; it is not charged while stopped and keeps its data and %d sats until %s, then it is removed. Send `start %s` to run it again.",
			after.Name, after.BalanceMsat/1000, when(b.d.RetainUntil(after)), after.Name)
	case nip.VerbStart:
		if before.State == records.StateRunning {
			return fmt.Sprintf("%s is already running.", after.Name)
		}
		return fmt.Sprintf("%s is %s.", after.Name, after.State)
	}
	if after.BalanceMsat > 0 {
		return fmt.Sprintf("%s is deleted. Its unspent %d sats are not refunded.", after.Name, after.BalanceMsat/1000)
	}
	return fmt.Sprintf("%s is deleted.", after.Name)
}

// owned runs f on the sender's container named target.
func (b *Bot) owned(ctx context.Context, from, target string, f func(records.Record) Answer) Answer {
	r, err := b.d.Records.Find(ctx, target)
	if errors.Is(err, records.ErrNotFound) || (err == nil && (r.State == records.StateRemoved || r.State == records.StateExpired)) {
		return refused(fmt.Sprintf("no container %s here. Send `status` for yours.", target))
	}
	if err != nil {
		return b.fromErr(err)
	}
	if r.Owner != from {
		return refused(fmt.Sprintf("%s is not yours: only its owner can do that.", r.Name))
	}
	return f(r)
}

func (b *Bot) help(ctx context.Context) string {
	u := b.d.Unit()
	free := b.freeUnits(ctx)
	disk := "enforced"
	if !b.d.DiskLimits() {
		disk = "not enforced by this instance's storage driver"
	}
	return fmt.Sprintf(`enclaved: rent a container in this instance, pay over Lightning.

deploy <image> [units=N] [hours=H] [name=X] [env=K=V ...] [egress=HOST[:PORT],...] [port=N] [admin=yes]
    quote + invoice (env only by DM); egress: hosts it may reach (%s); port: its HTTP port, served at https://NAME.<host>;
    admin=yes: name you as its admin in its public status (off by default)
status [name|npub]  your containers
topup <name|npub> <sats>  an invoice that credits a container
logs <name|npub> [lines]  its output (DM, owner only)
stop|start|delete <name|npub>  owner only
instance  what this instance is: its key, release, price and free capacity

1 unit = %s; disk %s.
Price: %s per unit-hour, charged per second of running time. Capacity: %d of %d units free.
A container whose balance runs out is paused and kept %s, then removed; a topup resumes it.
A stopped container is not charged and is kept %s too, then removed; start runs it again.`,
		b.d.EgressText(), unitText(u, 1), disk, sats(b.cfg.Pricing.PriceMsatPerUnitHour), max(free, 0), b.d.Capacity(),
		money.Human(b.cfg.Retention), money.Human(b.cfg.Retention))
}

// freeUnits is the instance's free capacity as help tells it: read at
// most once per helpCacheTTL (it sums every container's units), so help
// may be that stale. Quotes check capacity themselves, exactly.
func (b *Bot) freeUnits(ctx context.Context) int64 {
	now := b.now()
	b.mu.Lock()
	if !b.free.at.IsZero() && now.Sub(b.free.at) < helpCacheTTL && now.Sub(b.free.at) >= 0 {
		defer b.mu.Unlock()
		return b.free.units
	}
	b.mu.Unlock()
	free, err := b.d.FreeUnits(ctx)
	if err != nil {
		b.log.Error("reading the free capacity failed", "err", err)
		return 0
	}
	b.mu.Lock()
	b.free.units, b.free.at = free, now
	b.mu.Unlock()
	return free
}

func (b *Bot) deploy(ctx context.Context, r Request) Answer {
	q, err := b.q.Quote(ctx, r.From, string(r.Channel), r.Cmd)
	if err != nil {
		var ie *images.ImageError
		var qe *records.UserError
		if errors.As(err, &ie) || errors.As(err, &qe) {
			return refused("cannot deploy: " + err.Error())
		}
		return b.failure("quote", err)
	}
	res := QuoteResult{Pubkey: q.Pubkey, Quote: q.ContainerID, Name: q.Name, Image: q.Image.Pinned, Units: q.Units, Hours: q.Hours,
		PriceMsatPerUnitHour: q.PriceMsat, Invoice: invoiceJSON(q.Invoice)}
	res.Npub = records.Record{Pubkey: q.Pubkey}.Npub()
	expires := money.Human(q.Invoice.ExpiresAt.Sub(b.now()))
	return done(fmt.Sprintf(`Quote %s for %s
image: %s
resources: %s
price: %s per unit-hour × %d unit(s) × %d h = %s
Pay within %s; %s starts when the invoice is paid:

%s`, q.ContainerID, q.Name, q.Image.Pinned, unitText(q.Per, q.Units), sats(q.PriceMsat), q.Units, q.Hours, sats(q.TotalMsat),
		expires, q.Name, q.Invoice.Bolt11), res)
}

func (b *Bot) status(ctx context.Context, from, target string) Answer {
	var recs []records.Record
	if target != "" {
		r, err := b.d.Records.Find(ctx, target)
		if errors.Is(err, records.ErrNotFound) {
			return refused(fmt.Sprintf("no container %s here.", target))
		}
		if err != nil {
			return b.fromErr(err)
		}
		recs = append(recs, r)
	} else {
		var err error
		if recs, err = b.d.Records.Owned(ctx, from); err != nil {
			return b.failure("status", err)
		}
		if len(recs) == 0 {
			return done("you have no containers here. Send `help` to see how to deploy one.", StatusResult{Containers: []ContainerResult{}})
		}
	}
	res := StatusResult{Containers: make([]ContainerResult, 0, len(recs))}
	var sb strings.Builder
	for i, r := range recs {
		c := b.containerResult(r, from)
		res.Containers = append(res.Containers, c)
		if i > 0 {
			sb.WriteString("\n\n")
		}
		b.writeStatus(&sb, r, c)
	}
	return done(sb.String(), res)
}

// writeStatus writes what status tells of r (c is its result) to sb.
func (b *Bot) writeStatus(sb *strings.Builder, r records.Record, c ContainerResult) {
	fmt.Fprintf(sb, "%s: %s", r.Name, r.State)
	if c.Reason != "" {
		fmt.Fprintf(sb, " (%s)", c.Reason)
	}
	fmt.Fprintf(sb, "\nnpub: %s", c.Npub)
	if c.LightningAddress != "" {
		fmt.Fprintf(sb, "\nlightning address: %s", c.LightningAddress)
	}
	if c.Page != "" {
		fmt.Fprintf(sb, "\npage: %s", c.Page)
	}
	fmt.Fprintf(sb, "\nbalance: %d sats", c.BalanceMsat/1000)
	if r.State == records.StateRunning {
		fmt.Fprintf(sb, ", about %s left", money.Human(r.LeftAt(b.now())))
	}
	if kept(r.State) {
		fmt.Fprintf(sb, "\nkept until: %s, then removed", when(b.d.RetainUntil(r)))
	}
	fmt.Fprintf(sb, "\nresources: %s", unitText(b.d.Unit(), r.Units))
}

// info answers the RPC's info: one container, to its owner only.
func (b *Bot) info(ctx context.Context, r Request) Answer {
	return b.owned(ctx, r.From, r.Cmd.Target, func(rec records.Record) Answer {
		res := b.infoResult(rec)
		var sb strings.Builder
		b.writeStatus(&sb, rec, res.ContainerResult)
		return done(sb.String(), res)
	})
}

func (b *Bot) topup(ctx context.Context, from string, cmd nip.Command) Answer {
	r, err := b.d.Records.Find(ctx, cmd.Target)
	if errors.Is(err, records.ErrNotFound) {
		return refused(fmt.Sprintf("no container %s here.", cmd.Target))
	}
	if err != nil {
		return b.fromErr(err)
	}
	inv, err := b.q.Topup(ctx, r, cmd.Sats, from)
	var qe *records.UserError
	if errors.As(err, &qe) {
		return refused(qe.Msg)
	}
	if err != nil {
		return b.failure("topup", err)
	}
	return done(fmt.Sprintf("Invoice for %d sats to %s (pay within %s):\n\n%s", cmd.Sats, r.Name,
		money.Human(inv.ExpiresAt.Sub(b.now())), inv.Bolt11), TopupResult{Name: r.Name, Pubkey: r.Pubkey, Invoice: invoiceJSON(inv)})
}

// saved waits until the state change just made is saved outside the
// enclave (deployer.Durable) before the owner is told it happened: an
// acknowledged stop or delete is not undone by a restart, so a renter is
// never charged for a container they were told is stopped. If saving
// fails, the change still holds in this run and the next backup carries it.
func (b *Bot) saved(ctx context.Context, what string) {
	if err := b.d.Durable(ctx); err != nil {
		b.log.Warn(what+": the change is not saved outside the enclave yet", "err", err)
	}
}

// failure logs an internal error and returns what the user is told.
func (b *Bot) failure(what string, err error) Answer {
	b.log.Error(what+" failed", "err", err)
	msg := fmt.Sprintf("sorry, %s failed on the instance's side; try again later.", what)
	return Answer{Text: msg, Err: msg, Failed: true}
}

// fromErr is err's message when it is meant for users, else a generic
// line (internal errors may hold details users must not see).
func (b *Bot) fromErr(err error) Answer {
	var ue *records.UserError
	if errors.As(err, &ue) {
		return refused(ue.Msg)
	}
	b.log.Error("command failed", "err", err)
	msg := "that did not work on the instance's side; try again later."
	return Answer{Text: msg, Err: msg, Failed: true}
}

func unitText(u records.Unit, n int64) string {
	s := fmt.Sprintf("%.2f CPU, %d MiB memory, %d processes", float64(n*u.NanoCPUs)/1e9, n*u.MemoryBytes>>20, n*u.Pids)
	if u.DiskBytes > 0 {
		s += fmt.Sprintf(", %d MiB disk", n*u.DiskBytes>>20)
	}
	if n != 1 {
		s = fmt.Sprintf("%d units = %s", n, s)
	}
	return s
}

// when formats a moment for renters: UTC, to the minute.
func when(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") }

// sats formats msat as sats, keeping the millisatoshis when there are any.
func sats(msat int64) string {
	if msat%1000 == 0 {
		return fmt.Sprintf("%d sats", msat/1000)
	}
	return fmt.Sprintf("%d.%03d sats", msat/1000, msat%1000)
}
