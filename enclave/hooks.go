package enclave

import (
	"context"

	"github.com/enclaved/enclaved/billing"
	"github.com/enclaved/enclaved/deployer"
)

// Hooks are what runs when something happens in the instance: each slice
// in the order registered. NewInstance registers the instance's own, all
// in register; a caller may append more before Run.
type Hooks struct {
	// OnCredit runs for every settlement the ledger credited, on a
	// goroutine of its own (launching pulls and starts containers), so
	// settlements keep being applied meanwhile.
	OnCredit []func(ctx context.Context, c billing.Credit)
	// OnChange runs when money moved or a container's state changed:
	// credits, debits, and every deployer notice.
	OnChange []func()
	// OnNotice runs for every notice the deployer emits, after the state
	// change it follows.
	OnNotice []func(ctx context.Context, n deployer.Notice)
}

// register registers the instance's own hooks: the one place that says
// what follows a credit, a change and a notice.
func (in *Instance) register() {
	h := &in.Hooks
	if in.parts.Backup != nil {
		h.OnChange = append(h.OnChange, in.parts.Backup.Changed) // a backup soon
	}
	h.OnNotice = append(h.OnNotice,
		func(context.Context, deployer.Notice) { in.changed() }, // notices follow state changes: started, paused, resumed, removed
		in.Bot.Notify)
	h.OnCredit = append(h.OnCredit,
		func(ctx context.Context, c billing.Credit) {
			if c.Unclaimed {
				in.unclaimed(ctx, c)
				return
			}
			in.Deployer.OnCredit(ctx, c)
		},
		func(ctx context.Context, c billing.Credit) {
			if !c.Unclaimed && (c.Purpose == "zap" || c.Purpose == "lnurl") {
				in.zapped(ctx, c)
			}
		})
}

// credited runs the OnCredit hooks.
func (in *Instance) credited(ctx context.Context, c billing.Credit) {
	for _, h := range in.Hooks.OnCredit {
		h(ctx, c)
	}
}

// changed runs the OnChange hooks.
func (in *Instance) changed() {
	for _, h := range in.Hooks.OnChange {
		h()
	}
}

// notify runs the OnNotice hooks (the deployer's notify).
func (in *Instance) notify(ctx context.Context, n deployer.Notice) {
	for _, h := range in.Hooks.OnNotice {
		h(ctx, n)
	}
}
