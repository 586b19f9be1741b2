package bot

import (
	"time"

	"github.com/enclaved/enclaved/billing"
	"github.com/enclaved/enclaved/records"
)

// Answer is how a command was answered, once for every channel: people
// read Text (a DM, a mention), programs read Result or Err (the RPC).
type Answer struct {
	Text string // what a person reads
	// Result is what a program reads (JSON); nil when Err is set.
	Result any
	// Err is why the command was refused or failed, in one line.
	Err string
	// Failed: the instance's side failed (not the sender's mistake).
	Failed bool
	// invalid: the request itself was malformed (no command ran).
	invalid bool
	// id is the RPC request's id, echoed in its reply.
	id string
}

// done is a command carried out: text for people, result for programs.
func done(text string, result any) Answer { return Answer{Text: text, Result: result} }

// refused is a command refused for the sender's reason msg.
func refused(msg string) Answer { return Answer{Text: msg, Err: msg} }

// Outcomes of a command, as Config.Observe is told them.
const (
	OutcomeOK          = "ok"
	OutcomeRefused     = "refused"
	OutcomeFailed      = "failed"
	OutcomeRateLimited = "rate_limited"
	OutcomeInvalid     = "invalid"
)

func (a Answer) outcome() string {
	switch {
	case a.invalid:
		return OutcomeInvalid
	case a.Failed:
		return OutcomeFailed
	case a.Err != "":
		return OutcomeRefused
	}
	return OutcomeOK
}

// What the RPC's results hold (docs/rpc.md). Amounts are millisatoshis,
// times unix seconds.

// InvoiceJSON is an invoice in the shape of a NIP-47 make_invoice result,
// which upstream enclaved's launch returns.
type InvoiceJSON struct {
	Type        string `json:"type"`    // "incoming"
	Invoice     string `json:"invoice"` // BOLT11
	Description string `json:"description"`
	PaymentHash string `json:"payment_hash"`
	Amount      int64  `json:"amount"` // msat
	CreatedAt   int64  `json:"created_at"`
	ExpiresAt   int64  `json:"expires_at"`
}

func invoiceJSON(inv billing.Invoice) InvoiceJSON {
	return InvoiceJSON{Type: "incoming", Invoice: inv.Bolt11, Description: inv.Description, PaymentHash: inv.PaymentHash,
		Amount: inv.AmountMsat, CreatedAt: inv.CreatedAt.Unix(), ExpiresAt: inv.ExpiresAt.Unix()}
}

// QuoteResult answers launch and quote: upstream's {pubkey, invoice} and
// what the quote is for.
type QuoteResult struct {
	Pubkey               string      `json:"pubkey"` // the container's, hex
	Npub                 string      `json:"npub"`
	Quote                string      `json:"quote"` // its id
	Name                 string      `json:"name"`
	Image                string      `json:"image"` // pinned by digest
	Units                int64       `json:"units"`
	Hours                int64       `json:"hours"`
	PriceMsatPerUnitHour int64       `json:"price_msat_per_unit_hour"`
	Invoice              InvoiceJSON `json:"invoice"`
}

// ContainerResult is one container as status tells it.
type ContainerResult struct {
	Name             string `json:"name"`
	Pubkey           string `json:"pubkey"`
	Npub             string `json:"npub"`
	State            string `json:"state"`
	Reason           string `json:"reason,omitempty"` // its owner's only
	Image            string `json:"image"`
	Units            int64  `json:"units"`
	BalanceMsat      int64  `json:"balance_msat"`
	PaidUntil        int64  `json:"paid_until,omitempty"` // running only
	KeptUntil        int64  `json:"kept_until,omitempty"` // paused, stopped, exited
	LightningAddress string `json:"lightning_address,omitempty"`
	Page             string `json:"page,omitempty"`
}

// StatusResult answers status.
type StatusResult struct {
	Containers []ContainerResult `json:"containers"`
}

// InfoResult answers info: what status tells, and what only the owner
// may know (env keys but never their values).
type InfoResult struct {
	ContainerResult
	Egress      []string `json:"egress"`
	HTTPPort    int      `json:"http_port,omitempty"`
	EnvKeys     []string `json:"env_keys"`
	Admin       bool     `json:"admin"` // named admin in its public status
	CreatedAt   int64    `json:"created_at"`
	RunSeconds  int64    `json:"run_seconds"`
	ChargedMsat int64    `json:"charged_msat"`
}

// TopupResult answers topup.
type TopupResult struct {
	Name    string      `json:"name"`
	Pubkey  string      `json:"pubkey"`
	Invoice InvoiceJSON `json:"invoice"`
}

// LifecycleResult answers stop, start and delete: the state now.
type LifecycleResult struct {
	Name        string `json:"name"`
	Pubkey      string `json:"pubkey"`
	State       string `json:"state"`
	BalanceMsat int64  `json:"balance_msat"`
	KeptUntil   int64  `json:"kept_until,omitempty"`
}

// LogsResult answers logs.
type LogsResult struct {
	Name  string `json:"name"`
	Lines int    `json:"lines"`
	Logs  string `json:"logs"`
}

// containerResult is what status tells of r to from.
func (b *Bot) containerResult(r records.Record, from string) ContainerResult {
	now := b.now()
	c := ContainerResult{Name: r.Name, Pubkey: r.Pubkey, Npub: r.Npub(), State: r.State, Image: r.ImageRef, Units: r.Units,
		BalanceMsat: r.BalanceAt(now)}
	if r.Reason != "" && r.State != records.StateRunning && r.Owner == from {
		c.Reason = r.Reason
	}
	if t := r.PaidUntil(); r.State == records.StateRunning && !t.IsZero() {
		c.PaidUntil = t.Unix()
	}
	if kept(r.State) {
		c.KeptUntil = b.d.RetainUntil(r).Unix()
	}
	l := b.d.Links(r)
	c.LightningAddress, c.Page = l.Address, l.Page
	return c
}

// kept says whether a container in state is kept for a while, then removed.
func kept(state string) bool {
	return state == records.StatePaused || state == records.StateStopped || state == records.StateExited
}

func (b *Bot) infoResult(r records.Record) InfoResult {
	out := InfoResult{ContainerResult: b.containerResult(r, r.Owner), Egress: r.Egress, HTTPPort: r.HTTPPort,
		EnvKeys: []string{}, Admin: r.AdminPublic, CreatedAt: r.CreatedAt.Unix(),
		RunSeconds: r.RunMs / int64(time.Second/time.Millisecond), ChargedMsat: r.ChargedMsat}
	if out.Egress == nil {
		out.Egress = []string{}
	}
	for _, e := range r.Env {
		out.EnvKeys = append(out.EnvKeys, e[0])
	}
	return out
}
