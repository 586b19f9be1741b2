package keystore

import (
	"context"
	"sync"
	"time"

	"github.com/nbd-wtf/go-nostr"
)

// Serve answers the requests that reach relays until ctx ends; each
// reply goes to every relay.
func (s *Server) Serve(ctx context.Context, pool *nostr.SimplePool, relays []string) error {
	self, err := s.Pubkey(ctx)
	if err != nil {
		return err
	}
	since := nostr.Timestamp(s.Now().Add(-s.MaxAge).Unix())
	var wg sync.WaitGroup
	defer wg.Wait()
	for re := range pool.SubscribeMany(ctx, relays, nostr.Filter{Kinds: []int{Kind}, Tags: nostr.TagMap{"p": {self}}, Since: &since}) {
		wg.Go(func() {
			reply := s.Handle(ctx, re.Event)
			if reply == nil {
				return
			}
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			for r := range pool.PublishMany(pctx, relays, *reply) {
				if r.Error != nil {
					s.Log.Warn("key store reply not published", "relay", r.RelayURL, "err", r.Error)
				}
			}
		})
	}
	return ctx.Err()
}
