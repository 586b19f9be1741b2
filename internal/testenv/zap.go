package testenv

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"testing"

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
	amount := strconv.FormatInt(msat, 10)
	zr := nostr.Event{Kind: 9734, CreatedAt: nostr.Now(), Tags: nostr.Tags{{"relays", relay}, {"amount", amount}, {"p", pubkey}}}
	zr.Sign(nostr.GeneratePrivateKey())
	raw, _ := json.Marshal(zr)
	var inv struct{ PR string }
	getJSON(tb, callback+"?amount="+amount+"&nostr="+url.QueryEscape(string(raw)), &inv)
	if inv.PR == "" {
		tb.Fatal("no invoice from the callback")
	}
	return inv.PR
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
