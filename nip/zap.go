package nip

import (
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nbd-wtf/go-nostr"
	"github.com/nbd-wtf/go-nostr/nip19"
)

// Zap limits.
const (
	// MaxZapRequest bounds the zap request JSON a callback accepts.
	MaxZapRequest = 16 << 10
	// MaxReceiptRelays bounds where one zap receipt is published.
	MaxReceiptRelays = 5
)

// ZapRequest is a NIP-57 zap request (kind 9734) that passed the checks of
// Appendix D.
type ZapRequest struct {
	Event nostr.Event
	// Raw is the JSON as received: the invoice's description hash is its
	// sha256, and the receipt's description tag holds it unchanged.
	Raw        string
	Sender     string   // the request's pubkey
	Recipient  string   // its single p tag
	EventID    string   // its e tag, if any
	Coordinate string   // its a tag, if any
	Kind       string   // its k tag, if any
	Relays     []string // valid relays of its relays tag, at most MaxReceiptRelays
	AmountMsat int64    // its amount tag, or 0
}

// ZapError is a zap request that fails validation; its message says which
// rule, for the LNURL error reason.
type ZapError struct{ Msg string }

func (e *ZapError) Error() string { return e.Msg }

func zapErr(format string, args ...any) error {
	return &ZapError{Msg: "zap request: " + fmt.Sprintf(format, args...)}
}

var (
	hex64RE      = regexp.MustCompile(`^[0-9a-f]{64}$`)
	coordinateRE = regexp.MustCompile(`^[0-9]{1,5}:[0-9a-f]{64}:.*$`)
)

// ParseZapRequest validates raw, the callback's nostr parameter, as a zap
// request for amountMsat (the callback's amount parameter) to recipient
// (hex pubkey), whose LNURL (bech32) is lnurl, per NIP-57 Appendix D: a
// valid signature; tags; exactly one p tag, equal to recipient; at most one
// e tag, an event id; a relays tag with at least one ws:// or wss:// relay;
// an amount tag, if any, equal to amountMsat; an a tag, if any, a valid
// coordinate; an lnurl tag, if any, equal to lnurl; at most one P tag,
// equal to the sender (what the receipt's P tag will carry).
func ParseZapRequest(raw string, amountMsat int64, recipient, lnurl string) (ZapRequest, error) {
	if len(raw) > MaxZapRequest {
		return ZapRequest{}, zapErr("too long (%d bytes, at most %d)", len(raw), MaxZapRequest)
	}
	var evt nostr.Event
	if err := json.Unmarshal([]byte(raw), &evt); err != nil {
		return ZapRequest{}, zapErr("not a JSON event")
	}
	if evt.Kind != nostr.KindZapRequest {
		return ZapRequest{}, zapErr("kind %d, want %d", evt.Kind, nostr.KindZapRequest)
	}
	if !nostr.IsValidPublicKey(evt.PubKey) {
		return ZapRequest{}, zapErr("pubkey is not a valid public key")
	}
	if evt.GetID() != evt.ID {
		return ZapRequest{}, zapErr("id does not match the event")
	}
	if ok, _ := evt.CheckSignature(); !ok {
		return ZapRequest{}, zapErr("invalid signature")
	}
	if len(evt.Tags) == 0 {
		return ZapRequest{}, zapErr("no tags")
	}
	z := ZapRequest{Event: evt, Raw: raw, Sender: evt.PubKey}
	count := map[string]int{}
	for _, t := range evt.Tags {
		if len(t) == 0 {
			return ZapRequest{}, zapErr("an empty tag")
		}
		count[t[0]]++
		value := ""
		if len(t) > 1 {
			value = t[1]
		}
		switch t[0] {
		case "p":
			z.Recipient = value
		case "e":
			if !hex64RE.MatchString(value) {
				return ZapRequest{}, zapErr("e tag is not an event id")
			}
			z.EventID = value
		case "a":
			if !coordinateRE.MatchString(value) {
				return ZapRequest{}, zapErr("a tag is not an event coordinate (kind:pubkey:d)")
			}
			z.Coordinate = value
		case "k":
			z.Kind = value
		case "P":
			if value != evt.PubKey {
				return ZapRequest{}, zapErr("P tag is not the sender's pubkey")
			}
		case "amount":
			n, err := strconv.ParseInt(value, 10, 64)
			if err != nil || n <= 0 {
				return ZapRequest{}, zapErr("amount tag %q is not a positive number of millisats", clip(value, 20))
			}
			z.AmountMsat = n
		case "lnurl":
			if lnurl != "" && !strings.EqualFold(value, lnurl) {
				return ZapRequest{}, zapErr("lnurl tag is not this recipient's lnurl")
			}
		case "relays":
			// Checked again once normalised (normalising can turn
			// wss://u:p@host into wss://host:p), and each relay once.
			for _, r := range t[1:] {
				n := nostr.NormalizeURL(r)
				if len(z.Relays) < MaxReceiptRelays && ValidRelay(r) && ValidRelay(n) && !slices.Contains(z.Relays, n) {
					z.Relays = append(z.Relays, n)
				}
			}
		}
	}
	switch {
	case count["p"] != 1:
		return ZapRequest{}, zapErr("%d p tags, want exactly one", count["p"])
	case z.Recipient != recipient:
		return ZapRequest{}, zapErr("p tag is not this recipient's pubkey")
	case count["e"] > 1:
		return ZapRequest{}, zapErr("%d e tags, want at most one", count["e"])
	case count["P"] > 1:
		return ZapRequest{}, zapErr("%d P tags, want at most one", count["P"])
	case count["amount"] > 1 || count["lnurl"] > 1 || count["a"] > 1:
		return ZapRequest{}, zapErr("repeated amount, lnurl or a tag")
	case count["relays"] == 0:
		return ZapRequest{}, zapErr("no relays tag: nowhere to publish the receipt")
	case len(z.Relays) == 0:
		return ZapRequest{}, zapErr("relays tag holds no ws:// or wss:// relay")
	case z.AmountMsat != 0 && z.AmountMsat != amountMsat:
		return ZapRequest{}, zapErr("amount tag %d does not equal the amount parameter %d", z.AmountMsat, amountMsat)
	}
	return z, nil
}

// ParseStoredZapRequest reads a zap request that ParseZapRequest accepted
// before (from storage): the same checks, against its own p and amount tags.
func ParseStoredZapRequest(raw string) (ZapRequest, error) {
	var evt nostr.Event
	if err := json.Unmarshal([]byte(raw), &evt); err != nil {
		return ZapRequest{}, zapErr("not a JSON event")
	}
	recipient, amount := "", int64(0)
	if t := evt.Tags.Find("p"); len(t) > 1 {
		recipient = t[1]
	}
	if t := evt.Tags.Find("amount"); len(t) > 1 {
		amount, _ = strconv.ParseInt(t[1], 10, 64)
	}
	return ParseZapRequest(raw, amount, recipient, "")
}

// ValidRelay says whether s is a ws:// or wss:// relay URL of sane length.
func ValidRelay(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "ws" || u.Scheme == "wss") && u.Host != "" && len(s) <= 256
}

// ZapReceipt builds the unsigned kind-9735 receipt for a paid zap request,
// per NIP-57 Appendix E. It is deterministic (created_at is the settle
// time), so rebuilding it after a crash yields the same event id and
// relays keep one copy.
func ZapReceipt(z ZapRequest, bolt11, preimage string, paidAt time.Time) nostr.Event {
	tags := nostr.Tags{{"p", z.Recipient}, {"P", z.Sender}}
	if z.EventID != "" {
		tags = append(tags, nostr.Tag{"e", z.EventID})
	}
	if z.Coordinate != "" {
		tags = append(tags, nostr.Tag{"a", z.Coordinate})
	}
	if z.Kind != "" {
		tags = append(tags, nostr.Tag{"k", z.Kind})
	}
	tags = append(tags, nostr.Tag{"bolt11", bolt11}, nostr.Tag{"description", z.Raw})
	if preimage != "" {
		tags = append(tags, nostr.Tag{"preimage", preimage})
	}
	return nostr.Event{Kind: nostr.KindZap, CreatedAt: nostr.Timestamp(paidAt.Unix()), Content: "", Tags: tags}
}

// Npub is a hex pubkey in bech32, or the hex itself if it is not one.
func Npub(pubkey string) string {
	if s, err := nip19.EncodePublicKey(pubkey); err == nil {
		return s
	}
	return pubkey
}

// NewZapRequest is the unsigned zap request (kind 9734) a wallet sends to
// an LNURL callback: amountMsat to recipient (hex pubkey), its receipt to
// go to relays, comment as its content.
func NewZapRequest(recipient string, amountMsat int64, relays []string, comment string, at time.Time) nostr.Event {
	return nostr.Event{Kind: 9734, CreatedAt: nostr.Timestamp(at.Unix()), Content: comment, Tags: nostr.Tags{
		append(nostr.Tag{"relays"}, relays...),
		{"amount", strconv.FormatInt(amountMsat, 10)},
		{"p", recipient},
	}}
}
