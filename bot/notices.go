package bot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/deployer"
	"github.com/enclaved/enclaved/money"
	"github.com/enclaved/enclaved/nip"
	"github.com/enclaved/enclaved/records"
)

// Notice is a message for a container's owner (or a payer): a DM on
// Channel.
type Notice struct {
	ContainerID string
	Owner       string
	Channel     string
	Text        string
}

// Tell DMs a container's owner what happened to it, in words.
func (b *Bot) Tell(ctx context.Context, ev deployer.Event) {
	rec := ev.Container()
	text := EventText(ev, b.d.Unit(), b.d.Links(rec))
	if text == "" {
		return
	}
	b.Notify(ctx, Notice{ContainerID: rec.ID, Owner: rec.Owner, Channel: rec.Channel, Text: text})
}

// EventText is what a container's owner reads of ev ("": nothing); unit
// and links are the instance's unit and the container's links, which the
// running notice names.
func EventText(ev deployer.Event, unit records.Unit, links deployer.Links) string {
	r := ev.Container()
	switch e := ev.(type) {
	case deployer.Waiting:
		return fmt.Sprintf("%s is paid (%d sats balance) but the instance is full right now: %s. It starts when capacity frees up; the balance is kept.",
			r.Name, r.BalanceMsat/1000, r.Reason)
	case deployer.Pulling:
		return fmt.Sprintf("%s: still pulling the image (%s, %s so far)", r.Name, clip(e.Status, 80), e.Elapsed)
	case deployer.Failed:
		return fmt.Sprintf("%s could not be started (%s). Its balance of %d sats is kept; send `start %s` to retry.",
			r.Name, e.Step, r.BalanceMsat/1000, r.Name)
	case deployer.Running:
		return runningText(r, unit, links)
	case deployer.Resumed:
		return fmt.Sprintf("%s is running again; %d sats pay for about %s.", r.Name, r.BalanceMsat/1000, money.Human(r.Left()))
	case deployer.LowBalance:
		return fmt.Sprintf("%s has %d sats left, about %s of running time. Send `topup %s <sats>` to keep it running.",
			r.Name, r.BalanceMsat/1000, money.Human(e.Left), r.Name)
	case deployer.Paused:
		return fmt.Sprintf("%s is paused: its balance is used up. Its data is kept until %s; send `topup %s <sats>` or zap it to resume.",
			r.Name, e.RetainUntil.UTC().Format(time.RFC3339), r.Name)
	case deployer.Exited:
		var sb strings.Builder
		fmt.Fprintf(&sb, "%s stopped on its own: %s. It is not charged from then; its data and %d sats are kept until %s. Send `start %s` to run it again.",
			r.Name, r.Reason, r.BalanceMsat/1000, e.RetainUntil.UTC().Format("2006-01-02 15:04 UTC"), r.Name)
		if e.Tail != "" {
			fmt.Fprintf(&sb, "\nIts last lines of output:\n%s", e.Tail)
		}
		return sb.String()
	case deployer.Expired:
		return fmt.Sprintf("%s was removed: it stayed %s past the retention window (%s).", r.Name, e.Was, money.Human(e.Retention))
	case deployer.VolumesNotSaved:
		// Only this instance's own words reach the owner: what the parent
		// said stays in the log.
		reason := "the copy failed (the instance's log says why)"
		var big *deployer.VolumesTooLargeError
		switch {
		case errors.As(e.Err, &big):
			reason = big.Error()
		case errors.Is(e.Err, os.ErrDeadlineExceeded):
			reason = "copying them took longer than a backup allows"
		}
		text := fmt.Sprintf("%s: its volumes were not backed up: %s. ", r.Name, reason)
		if e.Kept.IsZero() {
			text += "No backup holds them: they would be lost if the instance restarted."
		} else {
			text += fmt.Sprintf("The backup keeps their copy of %s UTC; what was written since would be lost if the instance restarted.",
				e.Kept.UTC().Format("2006-01-02 15:04"))
		}
		return text + " Later backups try again."
	}
	return ""
}

func runningText(r records.Record, u records.Unit, l deployer.Links) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s is running.\nnpub: %s\n", r.Name, r.Npub())
	if l.Address != "" {
		fmt.Fprintf(&sb, "lightning address: %s (anyone can zap it to keep it running)\n", l.Address)
	}
	if l.Page != "" {
		fmt.Fprintf(&sb, "page: %s\n", l.Page)
	}
	fmt.Fprintf(&sb, `image: %s
resources: %d unit(s) = %.2f CPU, %d MiB memory, %d processes
balance: %d sats, about %s of running time
Send `+"`status %s`"+` to check on it, `+"`topup %s <sats>`"+` to add time.`,
		r.ImageRef, r.Units, float64(r.Units*u.NanoCPUs)/1e9, r.Units*u.MemoryBytes>>20, r.Units*u.Pids,
		r.BalanceMsat/1000, money.Human(r.Left()), r.Name, r.Name)
	return sb.String()
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// Zapped tells rec's owner it was zapped amountMsat by sender (hex
// pubkey; "" if unknown); rec's balance is after the zap.
func (b *Bot) Zapped(ctx context.Context, rec records.Record, amountMsat int64, sender string) {
	who := "someone"
	if sender != "" {
		who = nip.Npub(sender)
	}
	b.Notify(ctx, Notice{ContainerID: rec.ID, Owner: rec.Owner, Channel: rec.Channel,
		Text: fmt.Sprintf("%s was zapped %d sats by %s. Balance: %d sats, about %s of running time.",
			rec.Name, amountMsat/1000, who, rec.BalanceAt(b.now())/1000, money.Human(rec.LeftAt(b.now())))})
}

// Unclaimed tells payer (hex pubkey) that their payment of amountMsat
// for rec came after rec was removed: it was credited to nothing and is
// recorded as unclaimed for the operator.
func (b *Bot) Unclaimed(ctx context.Context, rec records.Record, payer string, amountMsat int64, paymentHash string) {
	channel := "nip17"
	if payer == rec.Owner {
		channel = rec.Channel
	}
	b.Notify(ctx, Notice{ContainerID: rec.ID, Owner: payer, Channel: channel,
		Text: fmt.Sprintf("Your payment of %s for %s arrived after %s was removed, so it was not credited to anything. The instance recorded it as unclaimed (payment hash %s); the operator of %s can see it and send it back.",
			msatText(amountMsat), rec.Name, rec.Name, paymentHash, nip.Npub(b.self))})
}

// msatText is an amount for people: whole sats, or sats with millisatoshis.
func msatText(msat int64) string {
	if msat%1000 == 0 {
		return fmt.Sprintf("%d sats", msat/1000)
	}
	return fmt.Sprintf("%d.%03d sats", msat/1000, msat%1000)
}

// Notify DMs a notice to its owner: NIP-04 if the owner wrote by NIP-04,
// else NIP-17 (notices are private, so a renter who came by mention gets
// them by NIP-17).
func (b *Bot) Notify(ctx context.Context, n Notice) {
	ch := nip.Channel(n.Channel)
	evt, _, err := nip.DM(ctx, b.keys, ch, n.Owner, n.Text, nostr.Timestamp(b.now().Unix()))
	if err != nil {
		b.log.Error("building a notice failed", "container", n.ContainerID, "err", err)
		return
	}
	if ch != nip.ChannelNIP04 {
		ch = nip.ChannelNIP17
	}
	b.publish(ctx, evt, b.relaysFor(ctx, ch, n.Owner))
}
