package publish

import (
	"context"
	"log/slog"
	"time"

	"github.com/nbd-wtf/go-nostr"
)

// Announcements are republished every AnnounceEvery, when the instance
// opens or closes (checked every AnnounceCheck), and when the attestation
// renews.
const (
	AnnounceEvery = time.Hour
	AnnounceCheck = time.Minute
)

// Announced is what the Announcer needs from the instance.
type Announced interface {
	// FreeUnits is how many units the instance can still rent out.
	FreeUnits(ctx context.Context) (int64, error)
	// TEERoot is its current kind-23793 attestation event (JSON); a new
	// one is announced at once.
	TEERoot(ctx context.Context) (string, error)
	// Announcement is its kind-13793 announcement, signed.
	Announcement(ctx context.Context) (nostr.Event, error)
}

// Announcer keeps an instance's announcement current on its relays.
type Announcer struct {
	Instance  Announced
	Publisher Publisher
	Relays    []string
	Now       func() time.Time
	Log       *slog.Logger
}

// Run announces until ctx ends. An announcement that could not be made
// or published (no relay took it) is tried again after a second, then
// after twice as long each time, up to AnnounceCheck: an instance that
// starts while its relay is slow is listed within seconds, not a minute.
func (a *Announcer) Run(ctx context.Context) {
	var last time.Time
	var lastOpen bool
	var lastRoot string
	retry := time.Duration(0)
	for {
		free, err := a.Instance.FreeUnits(ctx)
		open := err == nil && free > 0
		root, rerr := a.Instance.TEERoot(ctx)
		failed := rerr != nil
		if rerr == nil && (last.IsZero() || a.Now().Sub(last) >= AnnounceEvery || open != lastOpen || root != lastRoot) {
			evt, err := a.Instance.Announcement(ctx)
			if err == nil {
				err = a.Publisher.Publish(ctx, evt, a.Relays)
			}
			if err != nil && ctx.Err() == nil {
				a.Log.Warn("announcing", "err", err)
				failed = true
			} else if err == nil {
				last, lastOpen, lastRoot = a.Now(), open, root
			}
		} else if rerr != nil && ctx.Err() == nil {
			a.Log.Warn("attesting", "err", rerr)
		}
		wait := AnnounceCheck
		if failed {
			retry = min(max(2*retry, time.Second), AnnounceCheck)
			wait = retry
		} else {
			retry = 0
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}
