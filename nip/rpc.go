package nip

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/nbd-wtf/go-nostr"
	"github.com/nbd-wtf/go-nostr/nip19"
)

// The machine protocol (docs/rpc.md): Nostr JSON-RPC over kind 29425, as
// upstream enclaved speaks it. A request is signed by the caller, tagged
// `p` = the instance, its content NIP-44 v2 of {"id","method","params"};
// the reply is signed by the instance, tagged `p` = the caller, its
// content NIP-44 v2 of {"id","result"} or {"id","error"}.

// KindRPC is the kind of RPC requests and replies (ephemeral: relays pass
// them on and do not store them).
const KindRPC = 29425

// ChannelRPC is a request of the machine protocol.
const ChannelRPC Channel = "rpc"

// Limits of the RPC grammar.
const (
	maxRPCID = 64
	// A DM's env values fit in its 4 KiB; a request's are bounded alike.
	maxEnvValue = MaxCommandLen
	maxEnvBytes = 4 * MaxCommandLen
	// MaxRPCReply bounds a reply's JSON: NIP-44 v2 encrypts at most
	// 65535 bytes of plaintext.
	MaxRPCReply = 65535
)

// The RPC's own methods: upstream's ping, launch and info. Every other
// method is a command verb (Verbs).
const (
	MethodPing   = "ping"
	MethodLaunch = "launch"
	MethodInfo   = "info"
	MethodQuote  = "quote"
)

// Methods is every RPC method, in the order docs/rpc.md lists them.
var Methods = []string{MethodPing, MethodLaunch, MethodInfo, MethodQuote, string(VerbStatus), string(VerbTopup),
	string(VerbStop), string(VerbStart), string(VerbDelete), string(VerbLogs), string(VerbInstance), string(VerbHelp)}

// RPCRequest is a decrypted request: ID is the caller's, echoed in the
// reply (the reply is matched to the request by it, not by any tag).
type RPCRequest struct {
	ID     string
	Method string
	Params json.RawMessage // an object or an array; nil when absent
}

// ParseRPC parses a request's decrypted content. The error is meant for
// the caller; req.ID is set whenever the content had a usable id, so the
// error can be matched to the request.
func ParseRPC(plaintext string) (RPCRequest, error) {
	var raw struct {
		ID     json.RawMessage `json:"id"`
		Method json.RawMessage `json:"method"`
		Params json.RawMessage `json:"params"`
	}
	if err := json.Unmarshal([]byte(plaintext), &raw); err != nil {
		return RPCRequest{}, errorf("bad request: want a JSON object {\"id\",\"method\",\"params\"}")
	}
	var req RPCRequest
	if err := json.Unmarshal(raw.ID, &req.ID); err != nil || req.ID == "" || len(req.ID) > maxRPCID {
		req.ID = ""
		return req, errorf("bad request: id must be a string of 1 to %d characters", maxRPCID)
	}
	if err := json.Unmarshal(raw.Method, &req.Method); err != nil || req.Method == "" {
		return req, errorf("bad request: method must be a non-empty string")
	}
	p := bytes.TrimSpace(raw.Params)
	switch {
	case len(p) == 0 || string(p) == "null":
	case p[0] == '{' || p[0] == '[':
		req.Params = p
	default:
		return req, errorf("bad request: params must be an object (or an array for ping)")
	}
	return req, nil
}

// rpcParams are every method's parameters (docs/rpc.md); a method reads
// those it takes and refuses the others.
type rpcParams struct {
	Docker    *string            `json:"docker"`
	Image     *string            `json:"image"`
	Units     json.RawMessage    `json:"units"`
	Hours     json.RawMessage    `json:"hours"`
	Name      *string            `json:"name"`
	Env       map[string]*string `json:"env"`
	Egress    []string           `json:"egress"`
	Port      json.RawMessage    `json:"port"`
	Admin     *bool              `json:"admin"`
	Upgrade   *string            `json:"upgrade"`
	Container *string            `json:"container"`
	Pubkey    *string            `json:"pubkey"`
	Sats      json.RawMessage    `json:"sats"`
	Lines     json.RawMessage    `json:"lines"`
}

// takes says which params each method reads; any other is refused.
var takes = map[string][]string{
	MethodLaunch:         {"docker", "units", "name", "env", "upgrade"},
	MethodQuote:          {"image", "docker", "units", "hours", "name", "env", "egress", "port", "admin"},
	MethodInfo:           {"pubkey", "container", "docker"}, // upstream's CLI sends docker:"dummy"
	string(VerbStatus):   {"container", "pubkey", "name"},
	string(VerbTopup):    {"container", "pubkey", "name", "sats"},
	string(VerbLogs):     {"container", "pubkey", "name", "lines"},
	string(VerbStop):     {"container", "pubkey", "name"},
	string(VerbStart):    {"container", "pubkey", "name"},
	string(VerbDelete):   {"container", "pubkey", "name"},
	string(VerbInstance): {},
	string(VerbHelp):     {},
}

// RPCCommand turns a request into the command it asks for. ping has no
// command: it is answered by the protocol itself (ok is false, err nil).
// info is a status of one container that only its owner may ask for
// (owner is true). The error is meant for the caller.
func RPCCommand(req RPCRequest) (cmd Command, owner bool, err error) {
	if req.Method == MethodPing {
		return Command{}, false, nil
	}
	allowed, known := takes[req.Method]
	if !known {
		return Command{}, false, errorf("unknown method %q; methods: %s", clip(req.Method, 32), strings.Join(Methods, ", "))
	}
	var p rpcParams
	if len(req.Params) > 0 {
		if req.Params[0] == '[' {
			if string(req.Params) != "[]" {
				return Command{}, false, errorf("%s: params must be an object", req.Method)
			}
		} else if err := checkParams(req.Method, req.Params, allowed, &p); err != nil {
			return Command{}, false, err
		}
	}
	switch req.Method {
	case MethodLaunch:
		if p.Docker == nil || *p.Docker == "" {
			return Command{}, false, errorf("launch: docker is required: the image to run, e.g. \"registry/app@sha256:…\"")
		}
		if len(p.Units) == 0 || string(p.Units) == "null" {
			return Command{}, false, errorf("launch: units is required: a whole number from 1 to %d", MaxUnits)
		}
		if p.Upgrade != nil && *p.Upgrade != "" && *p.Upgrade != "auto" {
			return Command{}, false, errorf("launch: upgrade must be \"auto\" or \"\"")
		}
		return deployOf(req.Method, p)
	case MethodQuote:
		if p.Image == nil {
			p.Image = p.Docker
		} else if p.Docker != nil && *p.Docker != *p.Image {
			return Command{}, false, errorf("quote: image and docker name different images; send one")
		}
		if p.Image == nil || *p.Image == "" {
			return Command{}, false, errorf("quote: image is required")
		}
		return deployOf(req.Method, p)
	case MethodInfo:
		t, err := rpcTarget(req.Method, p, true)
		return Command{Verb: VerbStatus, Target: t}, true, err
	case string(VerbStatus):
		t, err := rpcTarget(req.Method, p, false)
		return Command{Verb: VerbStatus, Target: t}, false, err
	case string(VerbTopup):
		t, err := rpcTarget(req.Method, p, true)
		if err != nil {
			return Command{}, false, err
		}
		sats, err := whole(p.Sats, "topup: sats", 1, MaxTopupSats, 0)
		if err == nil && sats == 0 {
			err = errorf("topup: sats is required: whole sats from 1 to %d", MaxTopupSats)
		}
		return Command{Verb: VerbTopup, Target: t, Sats: sats}, false, err
	case string(VerbLogs):
		t, err := rpcTarget(req.Method, p, true)
		if err != nil {
			return Command{}, false, err
		}
		lines, err := whole(p.Lines, "logs: lines", 1, MaxLogLines, DefaultLines)
		return Command{Verb: VerbLogs, Target: t, Lines: int(lines)}, false, err
	case string(VerbStop), string(VerbStart), string(VerbDelete):
		t, err := rpcTarget(req.Method, p, true)
		return Command{Verb: Verb(req.Method), Target: t}, false, err
	default: // instance, help: no params
		return Command{Verb: Verb(req.Method)}, false, nil
	}
}

// checkParams decodes params into p, refusing what method does not take.
func checkParams(method string, params json.RawMessage, allowed []string, p *rpcParams) error {
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(params, &keys); err != nil {
		return errorf("%s: params must be a JSON object", method)
	}
	for k := range keys {
		if !slices.Contains(allowed, k) {
			if len(allowed) == 0 {
				return errorf("%s takes no params; got %q", method, clip(k, 32))
			}
			return errorf("%s: unknown param %q; it takes %s", method, clip(k, 32), strings.Join(allowed, ", "))
		}
	}
	if err := json.Unmarshal(params, p); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return errorf("%s: %s must be %s", method, te.Field, jsonType(te.Type.String()))
		}
		return errorf("%s: params must be a JSON object", method)
	}
	return nil
}

func jsonType(goType string) string {
	switch {
	case strings.Contains(goType, "map"):
		return "an object of strings"
	case strings.Contains(goType, "[]"):
		return "an array of strings"
	case strings.Contains(goType, "bool"):
		return "true or false"
	}
	return "a string"
}

// deployOf is the deploy command of launch's or quote's params, checked
// by the same rules as the deploy DM (the text grammar's parser).
func deployOf(method string, p rpcParams) (Command, bool, error) {
	c := Command{Verb: VerbDeploy, Units: 1, Hours: 1}
	if p.Image != nil {
		c.Image = *p.Image
	} else {
		c.Image = *p.Docker
	}
	if len(c.Image) > maxImageLen || strings.ContainsAny(c.Image, " \t\r\n=") {
		return c, false, errorf("%s: image %q is not an image reference", method, clip(c.Image, 64))
	}
	var err error
	var units, hours, port int64
	if units, err = whole(p.Units, method+": units", 1, MaxUnits, 1); err != nil {
		return c, false, err
	}
	if hours, err = whole(p.Hours, method+": hours", 1, MaxHours, 1); err != nil {
		return c, false, err
	}
	if port, err = whole(p.Port, method+": port", 1, 65535, 0); err != nil {
		return c, false, err
	}
	c.Units, c.Hours, c.Port = int(units), int(hours), int(port)
	if p.Name != nil {
		if !nameRE.MatchString(*p.Name) || strings.HasPrefix(*p.Name, "npub1") {
			return c, false, errorf("%s: name %q: use 1-32 lowercase letters, digits and dashes, starting with a letter (not npub1…)", method, clip(*p.Name, 40))
		}
		c.Name = *p.Name
	}
	if len(p.Env) > MaxEnv {
		return c, false, errorf("%s: at most %d env variables", method, MaxEnv)
	}
	size := 0
	for k, v := range p.Env {
		if !envKeyRE.MatchString(k) {
			return c, false, errorf("%s: env key %q: use letters, digits and _, not starting with a digit", method, clip(k, 40))
		}
		if v == nil {
			return c, false, errorf("%s: env %s: its value must be a string", method, k)
		}
		if len(*v) > maxEnvValue || strings.ContainsRune(*v, 0) {
			return c, false, errorf("%s: env %s: a value of at most %d bytes, without NUL", method, k, maxEnvValue)
		}
		size += len(k) + len(*v)
		if size > maxEnvBytes {
			return c, false, errorf("%s: env: at most %d bytes in all", method, maxEnvBytes)
		}
		c.Env = append(c.Env, EnvVar{Key: k, Value: *v})
	}
	// A JSON object has no order: a container's environment is the same
	// whatever order a client sent it in.
	slices.SortFunc(c.Env, func(a, b EnvVar) int { return strings.Compare(a.Key, b.Key) })
	if len(p.Egress) > MaxEgress {
		return c, false, errorf("%s: at most %d egress hosts", method, MaxEgress)
	}
	for _, h := range p.Egress {
		if h == "" || strings.ContainsAny(h, ", \t\r\n") {
			return c, false, errorf("%s: egress %q: want \"host\" or \"host:port\"", method, clip(h, 40))
		}
		c.Egress = append(c.Egress, strings.ToLower(h))
	}
	c.Admin = p.Admin != nil && *p.Admin
	return c, false, nil
}

// whole reads a whole number param from lo to hi (def when absent): a
// JSON number, or a string holding one (as some clients send numbers).
func whole(raw json.RawMessage, what string, lo, hi, def int64) (int64, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return def, nil
	}
	text := string(raw)
	var s string
	if json.Unmarshal(raw, &s) == nil {
		text = s
	}
	v, err := strconv.ParseInt(strings.TrimSpace(text), 10, 64)
	if err != nil || v < lo || v > hi {
		return 0, errorf("%s: want a whole number from %d to %d, got %s", what, lo, hi, clip(string(raw), 24))
	}
	return v, nil
}

// rpcTarget is the container a method names: container, name or pubkey
// (a name, an npub or a hex pubkey), as a name or an npub.
func rpcTarget(method string, p rpcParams, required bool) (string, error) {
	var got []string
	for _, s := range []*string{p.Container, p.Name, p.Pubkey} {
		if s != nil && *s != "" && !slices.Contains(got, *s) {
			got = append(got, *s)
		}
	}
	switch {
	case len(got) == 0 && required:
		return "", errorf("%s: container is required: a container's name, npub or hex pubkey", method)
	case len(got) == 0:
		return "", nil
	case len(got) > 1:
		return "", errorf("%s: container, name and pubkey name different containers; send one", method)
	}
	t := got[0]
	if len(t) == 64 && nostr.IsValid32ByteHex(t) {
		npub, err := nip19.EncodePublicKey(t)
		if err != nil {
			return "", errorf("%s: %q is not a public key", method, clip(t, 16))
		}
		return npub, nil
	}
	t, err := parseTarget(t)
	if err != nil {
		return "", fmt.Errorf("%s: %w", method, err)
	}
	return t, nil
}

// RPCResponse is a reply's plaintext: Error is set, or Result is.
type RPCResponse struct {
	ID     string `json:"id"`
	Result any    `json:"result,omitempty"`
	Error  string `json:"error,omitempty"`
}

// RPCReply builds the signed, NIP-44-encrypted reply to the caller to.
// A reply whose JSON would not fit one event is an error reply instead.
func RPCReply(ctx context.Context, keys Keys, to string, resp RPCResponse, now nostr.Timestamp) (nostr.Event, error) {
	body, err := json.Marshal(resp)
	if err == nil && len(body) > MaxRPCReply {
		body, err = json.Marshal(RPCResponse{ID: resp.ID, Error: fmt.Sprintf("the result is too large for one reply (%d bytes, at most %d); ask for less", len(body), MaxRPCReply)})
	}
	if err != nil {
		return nostr.Event{}, err
	}
	ct, err := keys.Encrypt(ctx, string(body), to)
	if err != nil {
		return nostr.Event{}, err
	}
	evt := nostr.Event{Kind: KindRPC, CreatedAt: now, Tags: nostr.Tags{{"p", to}}, Content: ct}
	err = keys.SignEvent(ctx, &evt)
	return evt, err
}
