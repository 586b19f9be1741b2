package bot

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/nbd-wtf/go-nostr"
)

// PublishProfile publishes, signed by the instance key, its kind-0 profile,
// its kind-10002 relay list (read and write on every instance relay) and
// its kind-10050 DM relay list, so clients know where to DM it.
func (b *Bot) PublishProfile(ctx context.Context) error {
	about := b.cfg.About
	if about == "" {
		about = "An enclaved instance: rent a container in an enclave over Nostr, pay over Lightning. DM me `help`."
	}
	name := b.cfg.Name
	if name == "" {
		name = "enclaved"
	}
	content, err := json.Marshal(map[string]string{"name": name, "about": about})
	if err != nil {
		return err
	}
	now := nostr.Timestamp(b.now().Unix())
	profile := nostr.Event{Kind: nostr.KindProfileMetadata, CreatedAt: now, Content: string(content), Tags: nostr.Tags{}}
	relayList := nostr.Event{Kind: nostr.KindRelayListMetadata, CreatedAt: now, Tags: nostr.Tags{}}
	dmRelays := nostr.Event{Kind: nostr.KindDMRelayList, CreatedAt: now, Tags: nostr.Tags{}}
	for _, r := range b.cfg.Relays {
		relayList.Tags = append(relayList.Tags, nostr.Tag{"r", r})
		dmRelays.Tags = append(dmRelays.Tags, nostr.Tag{"relay", r})
	}
	var errs []error
	for _, evt := range []*nostr.Event{&profile, &relayList, &dmRelays} {
		if b.cfg.Dev {
			evt.Tags = append(evt.Tags, nostr.Tag{"t", "dev"})
		}
		if err := b.keys.SignEvent(ctx, evt); err != nil {
			return err
		}
		if err := b.publish(ctx, *evt, b.cfg.Relays); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
