package enclave

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/enclaved/enclaved/billing"
	"github.com/enclaved/enclaved/records"
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
		DB: in.parts.DB, Containers: in.Deployer.Records, Invoices: in.Invoices, BaseURL: base,
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
	rec, err := in.Deployer.Records.Get(ctx, c.ContainerID)
	if err != nil || rec.State == records.StateRemoved {
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
	sender := ""
	if c.Purpose == "zap" {
		sender, _ = in.Invoices.ZapSender(ctx, c.PaymentHash)
	}
	in.Bot.Zapped(ctx, rec, c.AmountMsat, sender)
}

// unclaimed tells the payer, when known, that their payment came after its
// container was removed: it was credited to nothing and is recorded as
// unclaimed for the operator (enclaved audit lists them). A zap still gets
// its receipt: the payment was made.
func (in *Instance) unclaimed(ctx context.Context, c billing.Credit) {
	if c.Purpose == "zap" {
		in.receipts.Wake()
	}
	rec, err := in.Deployer.Records.Get(ctx, c.ContainerID)
	if err != nil || c.Requester == "" {
		return
	}
	in.Bot.Unclaimed(ctx, rec, c.Requester, c.AmountMsat, c.PaymentHash)
}
