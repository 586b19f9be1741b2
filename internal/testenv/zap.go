package testenv

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"
)

// PayRequest is the part of an LNURL-pay answer a zapping wallet reads.
type PayRequest struct {
	Callback    string `json:"callback"`
	NostrPubkey string `json:"nostrPubkey"`
}

// FetchPayRequest GETs an LNURL-pay endpoint (a lightning address's
// /.well-known/lnurlp/<name>) and fails the test if it cannot.
func FetchPayRequest(tb testing.TB, endpoint string) PayRequest {
	tb.Helper()
	var pr PayRequest
	getJSON(tb, endpoint, &pr)
	return pr
}

// ZapInvoice does what a wallet does for a zap: it signs a zap request
// (kind 9734, fresh key) of msat to pubkey with relay as its receipt relay,
// asks the callback for an invoice and returns it, failing the test if
// there is none.
func ZapInvoice(tb testing.TB, callback, pubkey, relay string, msat int64) string {
	tb.Helper()
	pr, err := TryZapInvoice(callback, pubkey, relay, msat)
	if err != nil {
		tb.Fatal(err)
	}
	return pr
}

// TryZapInvoice is ZapInvoice returning its error, for tests whose
// instance may be down.
func TryZapInvoice(callback, pubkey, relay string, msat int64) (string, error) {
	amount := strconv.FormatInt(msat, 10)
	zr := nostr.Event{Kind: 9734, CreatedAt: nostr.Now(), Tags: nostr.Tags{{"relays", relay}, {"amount", amount}, {"p", pubkey}}}
	zr.Sign(nostr.GeneratePrivateKey())
	raw, _ := json.Marshal(zr)
	var inv struct{ PR string }
	if err := tryJSON(callback+"?amount="+amount+"&nostr="+url.QueryEscape(string(raw)), &inv); err != nil {
		return "", err
	}
	if inv.PR == "" {
		return "", errors.New("no invoice from the callback")
	}
	return inv.PR, nil
}

// TryPayRequest is FetchPayRequest returning its error.
func TryPayRequest(endpoint string) (PayRequest, error) {
	var pr PayRequest
	err := tryJSON(endpoint, &pr)
	return pr, err
}

func tryJSON(u string, v any) error {
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func getJSON(tb testing.TB, u string, v any) {
	tb.Helper()
	resp, err := http.Get(u)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	json.NewDecoder(resp.Body).Decode(v)
}
