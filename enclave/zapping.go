package enclave

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/enclaved/enclaved/billing"
	"github.com/enclaved/enclaved/deployer"
	"github.com/enclaved/enclaved/nip"
	"github.com/enclaved/enclaved/zaps"
)

// setupZaps creates the zap service for an HTTP API at addr.
func (in *Instance) setupZaps(addr string) error {
	public := in.cfg.HTTP.PublicURL
	if public == "" {
		public = "http://" + addr
		if in.parts.TLS != nil {
			public = "https://" + addr
		}
	}
	base, err := url.Parse(strings.TrimSuffix(public, "/"))
	if err != nil {
		return fmt.Errorf("http.public_url: %w", err)
	}
	in.Zaps = &zaps.Service{
		DB: in.parts.DB, Containers: in.Deployer, Invoices: in.Invoices, BaseURL: base,
		InstanceName: in.cfg.Instance.Name, InstancePubkey: in.parts.Key.PublicKey(),
		Zapper: in.parts.Key.ZapperKey().Keys(), Relays: in.parts.Relays, Publish: in.Bot.Publish, Reachable: in.Bot.Reachable,
		Now: in.now, Log: in.log.With("part", "zaps"),
		InvoicesPerClientPerMinute: int(in.cfg.HTTP.InvoicesPerClientPerMinute), InvoicesPerMinute: int(in.cfg.HTTP.InvoicesPerMinute),
	}
	in.receipts.Pending = in.Zaps
	return nil
}

// zapNoticeEvery rate-limits the owner's zap notices per container.
const zapNoticeEvery = 10 * time.Minute

// zapped publishes the receipt of a settled zap and tells the owner (at
// most once per zapNoticeEvery per container): who, how much, time left.
func (in *Instance) zapped(ctx context.Context, c billing.Credit) {
	in.receipts.Wake()
	rec, err := in.Deployer.Get(ctx, c.ContainerID)
	if err != nil || rec.State == deployer.StateRemoved {
		return
	}
	now := in.now()
	in.mu.Lock()
	last, told := in.zapNotices[rec.ID]
	if told && now.Sub(last) < zapNoticeEvery {
		in.mu.Unlock()
		return
	}
	in.zapNotices[rec.ID] = now
	in.mu.Unlock()
	who := "someone"
	if c.Purpose == "zap" {
		var raw string
		if err := in.parts.DB.QueryRowContext(ctx, `SELECT zap_request FROM invoices WHERE payment_hash = ?`, c.PaymentHash).Scan(&raw); err == nil {
			if z, err := nip.ParseStoredZapRequest(raw); err == nil {
				who = nip.Npub(z.Sender)
			}
		}
	}
	in.Bot.Notify(ctx, deployer.Notice{ContainerID: rec.ID, Owner: rec.Owner, Channel: rec.Channel,
		Text: fmt.Sprintf("%s was zapped %d sats by %s. Balance: %d sats, about %s of running time.",
			rec.Name, c.AmountMsat/1000, who, rec.BalanceMsat/1000, deployer.Human(rec.LeftAt(now)))})
}

// unclaimed tells the payer, when known, that their payment came after its
// container was removed: it was credited to nothing and is recorded as
// unclaimed for the operator (enclaved audit lists them). A zap still gets
// its receipt: the payment was made.
func (in *Instance) unclaimed(ctx context.Context, c billing.Credit) {
	if c.Purpose == "zap" {
		in.receipts.Wake()
	}
	rec, err := in.Deployer.Get(ctx, c.ContainerID)
	if err != nil || c.Requester == "" {
		return
	}
	channel := "nip17"
	if c.Requester == rec.Owner {
		channel = rec.Channel
	}
	in.Bot.Notify(ctx, deployer.Notice{ContainerID: rec.ID, Owner: c.Requester, Channel: channel,
		Text: fmt.Sprintf("Your payment of %s for %s arrived after %s was removed, so it was not credited to anything. The instance recorded it as unclaimed (payment hash %s); the operator of %s can see it and send it back.",
			msatText(c.AmountMsat), rec.Name, rec.Name, c.PaymentHash, in.parts.Key.Npub())})
}

// msatText is an amount for people: whole sats, or sats with millisatoshis.
func msatText(msat int64) string {
	if msat%1000 == 0 {
		return fmt.Sprintf("%d sats", msat/1000)
	}
	return fmt.Sprintf("%d.%03d sats", msat/1000, msat%1000)
}
