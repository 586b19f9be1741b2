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
	// credits, debits, and every event of a container's life.
	OnChange []func()
	// OnEvent runs for every event of a container's life the deployer
	// emits (deployer.Event), after the state change it follows.
	OnEvent []func(ctx context.Context, ev deployer.Event)
}

// register registers the instance's own hooks: the one place that says
// what follows a credit, a change and a notice.
func (in *Instance) register() {
	h := &in.Hooks
	if in.parts.Backup != nil {
		h.OnChange = append(h.OnChange, in.parts.Backup.Changed) // a backup soon
	}
	h.OnEvent = append(h.OnEvent,
		func(context.Context, deployer.Event) { in.changed() }, // events follow state changes: started, paused, resumed, removed
		in.Bot.Tell) // the owner is told, in the bot's words
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

// event runs the OnEvent hooks (the deployer's one OnEvent hook).
func (in *Instance) event(ctx context.Context, ev deployer.Event) {
	for _, h := range in.Hooks.OnEvent {
		h(ctx, ev)
	}
}
