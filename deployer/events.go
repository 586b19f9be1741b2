package deployer

import (
	"context"
	"time"

	"github.com/enclaved/enclaved/records"
)

// Event is something that happened to a container that its owner hears
// about. The deployer says what happened; the bot says it in words.
// Every event carries the container's record as of the event.
type Event interface {
	Container() records.Record
}

// Of is the record an event is about; embedded in every event.
type Of struct{ Rec records.Record }

// Container is the record the event is about.
func (o Of) Container() records.Record { return o.Rec }

// The events, in a container's life.
type (
	// Waiting: paid, but the instance has no capacity for it now; it
	// starts when some frees up, its balance kept.
	Waiting struct {
		Of
		Free, Capacity int64 // units
	}
	// Pulling: the image is still on its way (a pull slower than
	// slowPull, then every pullNoticeEvery).
	Pulling struct {
		Of
		Status  string // the runtime's last progress line
		Elapsed time.Duration
	}
	// Failed: the launch failed at Step; the balance is kept.
	Failed struct {
		Of
		Step string
	}
	// Running: launched.
	Running struct{ Of }
	// Resumed: running again after a pause, stop or exit.
	Resumed struct{ Of }
	// LowBalance: less running time is left than the owner should be
	// warned at (told once per top-up).
	LowBalance struct {
		Of
		Left time.Duration
	}
	// Paused: the balance is used up; data kept until RetainUntil.
	Paused struct {
		Of
		RetainUntil time.Time
	}
	// Exited: it stopped on its own (Code, OOM, or Gone from the
	// runtime) at At; not charged from then; data kept until RetainUntil.
	// Tail is its last lines of output ("" if none).
	Exited struct {
		Of
		Code        int
		OOM, Gone   bool
		At          time.Time
		RetainUntil time.Time
		Tail        string
	}
	// Expired: removed after staying halted (paused, stopped, exited:
	// Was) past the retention window.
	Expired struct {
		Of
		Was       string
		Retention time.Duration
	}
	// VolumesNotSaved: a backup could not copy its volumes (Err: a
	// *VolumesTooLargeError, a deadline, or another failure whose details
	// stay in the log) and kept their copy of Kept (zero: none).
	VolumesNotSaved struct {
		Of
		Err  error
		Kept time.Time
	}
)

// emit passes ev to every OnEvent hook, in order.
func (d *Deployer) emit(ctx context.Context, ev Event) {
	for _, fn := range d.OnEvent {
		fn(ctx, ev)
	}
}
