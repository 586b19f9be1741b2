package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/enclave"
	"github.com/enclaved/enclaved/nip"
)

// runDevZap zaps a lightning address from the dev instance's regtest payer,
// as a zap-capable wallet would (NIP-57): it reads the address's LNURL-pay
// endpoint and NIP-05 name, signs a zap request with the client key, gets
// the invoice from the callback, pays it and waits for the zap receipt.
func runDevZap(ctx context.Context, args []string, stdout, stderr io.Writer, environ []string) error {
	fs := newFlagSet("dev zap", `Zaps a lightning address from the regtest payer node of `+"`enclaved dev`"+`:

  enclaved dev zap [flags] <name@host> <sats>

The zap request is signed with the client key of `+"`enclaved dm`"+`
(<data dir>/client.key); the receipt is awaited on the relays.`, stderr)
	load := configFlags(fs, environ)
	var relays setFlags
	fs.Var(&relays, "relay", "relay for the zap receipt; repeatable (default: the dev relay)")
	comment := fs.String("comment", "", "the zap's comment")
	wait := fs.Duration("wait", 30*time.Second, "how long to wait for the zap receipt")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		fs.Usage()
		return errors.New("dev zap: want a lightning address and an amount in sats")
	}
	user, host, ok := strings.Cut(fs.Arg(0), "@")
	if !ok || user == "" || host == "" || strings.ContainsAny(user, "/?#") || strings.ContainsAny(host, "/?#@") {
		return fmt.Errorf("dev zap: %q is not a lightning address (name@host)", fs.Arg(0))
	}
	sats, err := strconv.ParseInt(fs.Arg(1), 10, 64)
	if err != nil || sats <= 0 || sats > 1_000_000 {
		return fmt.Errorf("dev zap: %q is not an amount of sats between 1 and 1000000", fs.Arg(1))
	}
	msat := sats * 1000
	cfg, err := load()
	if err != nil {
		return err
	}
	urls, err := clientRelays(cfg, relays)
	if err != nil {
		return fmt.Errorf("dev zap: %w", err)
	}
	if err := ensureDir(cfg.DataDir, "data dir", "-data-dir (data_dir)"); err != nil {
		return err
	}
	key, err := enclave.LoadOrCreateKey(filepath.Join(cfg.DataDir, "client.key"))
	if err != nil {
		return err
	}

	// What a wallet reads: the pay endpoint, and the recipient's pubkey
	// from the same name's NIP-05 entry.
	base := addressBase(host)
	var pr struct {
		Tag            string `json:"tag"`
		Callback       string `json:"callback"`
		MinSendable    int64  `json:"minSendable"`
		MaxSendable    int64  `json:"maxSendable"`
		AllowsNostr    bool   `json:"allowsNostr"`
		NostrPubkey    string `json:"nostrPubkey"`
		Status, Reason string
	}
	if err := getJSON(ctx, base+"/.well-known/lnurlp/"+url.PathEscape(user), &pr); err != nil {
		return fmt.Errorf("dev zap: %w", err)
	}
	if pr.Tag != "payRequest" || pr.Callback == "" {
		return fmt.Errorf("dev zap: %s has no pay endpoint: %s", fs.Arg(0), pr.Reason)
	}
	if !pr.AllowsNostr || pr.NostrPubkey == "" {
		return fmt.Errorf("dev zap: %s does not take zaps", fs.Arg(0))
	}
	if msat < pr.MinSendable || msat > pr.MaxSendable {
		return fmt.Errorf("dev zap: %s takes %d to %d sats", fs.Arg(0), pr.MinSendable/1000, pr.MaxSendable/1000)
	}
	var n05 struct {
		Names map[string]string `json:"names"`
	}
	if err := getJSON(ctx, base+"/.well-known/nostr.json?name="+url.QueryEscape(user), &n05); err != nil {
		return fmt.Errorf("dev zap: %w", err)
	}
	recipient := n05.Names[user]
	if recipient == "" {
		return fmt.Errorf("dev zap: %s has no NIP-05 pubkey", fs.Arg(0))
	}

	zr := nip.NewZapRequest(recipient, msat, urls, *comment, time.Now())
	if err := key.Keys().SignEvent(ctx, &zr); err != nil {
		return err
	}
	raw, err := json.Marshal(zr)
	if err != nil {
		return err
	}
	cb, err := url.Parse(pr.Callback)
	if err != nil {
		return fmt.Errorf("dev zap: callback %q: %w", pr.Callback, err)
	}
	q := cb.Query()
	q.Set("amount", strconv.FormatInt(msat, 10))
	q.Set("nostr", string(raw))
	cb.RawQuery = q.Encode()
	var inv struct {
		PR     string `json:"pr"`
		Reason string `json:"reason"`
	}
	if err := getJSON(ctx, cb.String(), &inv); err != nil {
		return fmt.Errorf("dev zap: %w", err)
	}
	if inv.PR == "" {
		return fmt.Errorf("dev zap: no invoice from the callback: %s", inv.Reason)
	}

	// Listen for the receipt before paying, so it cannot be missed.
	pool := nostr.NewSimplePool(ctx)
	defer pool.Close("done")
	wctx, cancel := context.WithTimeout(ctx, *wait)
	defer cancel()
	since := nostr.Now() - 60
	receipts := pool.SubscribeMany(wctx, urls, nostr.Filter{Kinds: []int{nostr.KindZap},
		Authors: []string{pr.NostrPubkey}, Tags: nostr.TagMap{"p": {recipient}}, Since: &since})
	p, err := payFromDevPayer(ctx, cfg.DataDir, inv.PR)
	if err != nil {
		return fmt.Errorf("dev zap: %w", err)
	}
	fmt.Fprintf(stdout, "zapped %s %d sats (fee %d msat)\n", fs.Arg(0), p.ValueSat, p.FeeMsat)
	for re := range receipts {
		if re.Event.Tags.FindWithValue("bolt11", inv.PR) != nil && re.Event.CheckID() {
			if ok, err := re.Event.CheckSignature(); ok && err == nil {
				fmt.Fprintf(stdout, "zap receipt %s published by %s\n", re.Event.ID, nip.Npub(re.Event.PubKey))
				return nil
			}
		}
	}
	return fmt.Errorf("dev zap: paid, but no zap receipt reached %s within %s", strings.Join(urls, ", "), *wait)
}

// addressBase is the origin of a lightning address's host (LUD-16): https,
// except plain http for a dev instance on this machine.
func addressBase(host string) string {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	ip := net.ParseIP(h)
	if h == "localhost" || strings.HasSuffix(h, ".localhost") || (ip != nil && ip.IsLoopback()) {
		return "http://" + host
	}
	return "https://" + host
}

// maxJSON bounds what the dev wallet reads of an LNURL answer.
const maxJSON = 64 << 10

// getJSON GETs u and decodes its JSON body (at most maxJSON bytes), turning
// an LNURL error into its reason.
func getJSON(ctx context.Context, u string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJSON+1))
	if err != nil {
		return err
	}
	if len(body) > maxJSON {
		return fmt.Errorf("%s: answer over %d bytes", req.URL.Redacted(), maxJSON)
	}
	var lnErr struct{ Status, Reason string }
	if json.Unmarshal(body, &lnErr) == nil && strings.EqualFold(lnErr.Status, "ERROR") {
		return fmt.Errorf("%s: %s", req.URL.Path, lnErr.Reason)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", req.URL.Path, resp.Status)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%s: %w", req.URL.Path, err)
	}
	return nil
}
