package bot

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/httpapi"
	"github.com/enclaved/enclaved/money"
	"github.com/enclaved/enclaved/nip"
)

// The machine protocol (docs/rpc.md): kind-29425 requests reach the bot on
// its relays like DMs do, and go the same way (deduplicated by event id,
// rate-limited per sender, answered in the sender's lane); only their
// grammar (JSON) and their reply (JSON, on the relay the request came
// from) differ. Every method but ping and info is a command verb of the
// same table the DMs use.

// maxRPCAge bounds how old a request may be and still be answered: a
// caller waits for its reply for seconds (upstream's client for 30 s), so
// an old request is one nobody waits for. Requests are ephemeral events
// that relays do not store; an old one comes only from a relay that kept it.
const maxRPCAge = 10 * time.Minute

// answerRPC runs the request in msg.
func (b *Bot) answerRPC(ctx context.Context, msg nip.Message) Answer {
	if msg.Unreadable {
		return Answer{Err: "bad request: the content is not NIP-44 v2 encrypted to the instance's key", invalid: true}
	}
	req, err := nip.ParseRPC(msg.Text)
	if err != nil {
		return Answer{Err: err.Error(), invalid: true, id: req.ID}
	}
	a := b.runRPC(ctx, msg, req)
	a.id = req.ID
	return a
}

func (b *Bot) runRPC(ctx context.Context, msg nip.Message, req nip.RPCRequest) Answer {
	if msg.CreatedAt.Time().Before(b.now().Add(-maxRPCAge)) {
		return refused(fmt.Sprintf("request too old (sent %s ago, at most %s): send it again", money.Human(b.now().Sub(msg.CreatedAt.Time())), money.Human(maxRPCAge)))
	}
	if req.Method == nip.MethodPing {
		return done("pong", "pong")
	}
	cmd, ownerOnly, err := nip.RPCCommand(req)
	if err != nil {
		return Answer{Err: err.Error(), invalid: true}
	}
	r := Request{Cmd: cmd, From: msg.From, Channel: nip.ChannelRPC, At: msg.CreatedAt.Time(), Private: true}
	if ownerOnly {
		return b.info(ctx, r)
	}
	return b.Do(ctx, r)
}

// rpcID is the id of the request in msg, if it has a readable one.
func rpcID(msg nip.Message) string {
	if msg.Unreadable {
		return ""
	}
	req, _ := nip.ParseRPC(msg.Text)
	return req.ID
}

// send answers msg with a: a DM or a mention's reply with a.Text, an RPC
// reply with a.Result or a.Err.
func (b *Bot) send(ctx context.Context, msg nip.Message, a Answer) {
	if msg.Channel != nip.ChannelRPC {
		b.reply(ctx, msg, a.Text)
		return
	}
	resp := nip.RPCResponse{ID: a.id, Result: a.Result, Error: a.Err}
	if a.Err == "" && a.Result == nil {
		resp.Result = a.Text
	}
	if !b.compute(ctx) {
		return
	}
	evt, err := nip.RPCReply(ctx, b.keys, msg.From, resp, nostr.Timestamp(b.now().Unix()))
	b.computed()
	if err != nil {
		b.log.Error("building an RPC reply failed", "err", err)
		return
	}
	// Back where the request came from: the caller listens there.
	relays := b.cfg.Relays
	if msg.Relay != "" {
		relays = []string{msg.Relay}
	}
	b.publish(ctx, evt, relays)
}

// instance answers what the instance is: the facts GET /api/v1/instance
// serves, from the same source.
func (b *Bot) instance(ctx context.Context) Answer {
	if b.cfg.Instance == nil {
		return b.fromErr(fmt.Errorf("bot: no Config.Instance"))
	}
	facts := httpapi.InstanceNow{Instance: b.cfg.Instance(), FreeUnits: max(b.freeUnits(ctx), 0)}
	mode := "an attested Nitro Enclave"
	if facts.Dev {
		mode = "a development instance (not attested: do not trust it with secrets)"
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "enclaved %s, %s.\n", facts.Version, mode)
	fmt.Fprintf(&sb, "npub: %s\n", facts.Npub)
	fmt.Fprintf(&sb, "price: %s per unit-hour; 1 unit = %s\n", sats(facts.MsatPerUnitHour), unitText(b.d.Unit(), 1))
	fmt.Fprintf(&sb, "capacity: %d of %d units free\n", facts.FreeUnits, facts.CapacityUnits)
	fmt.Fprintf(&sb, "relays: %s", strings.Join(facts.Relays, ", "))
	return done(sb.String(), facts)
}
