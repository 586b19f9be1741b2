package enclave_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/enclaved/enclaved/deployer"
	"github.com/enclaved/enclaved/internal/testenv"
)

// A quote launches only when its own invoice, the quoted total, is paid:
// no top-up and no zap reaches an unpaid quote, so no sequence of small
// payments starts a container for less than its quote.
func TestQuoteRunsOnlyWhenItsTotalIsPaid(t *testing.T) {
	relay := testenv.Relay(t)
	imgs := testenv.Images(t)
	inst := startInstance(t, t.TempDir(), []string{relay.URL})
	self := inst.key.PublicKey()
	owner := testenv.NewClient(t, relay.URL)
	quote := owner.Ask(t, "nip17", self, "deploy "+imgs.Hello.Ref+" name=cheap hours=2").Text
	if !strings.Contains(quote, "Quote") {
		t.Fatalf("deploy: %q", quote)
	}
	r := owner.Ask(t, "nip17", self, "topup cheap 1")
	if !strings.Contains(r.Text, "cheap is not paid yet") || strings.Contains(r.Text, "lnbcrt") {
		t.Fatalf("topup of an unpaid quote: %q, want a refusal without an invoice", r.Text)
	}
	var lnurl map[string]any
	if code := inst.get(t, "/.well-known/lnurlp/cheap", &lnurl); code != http.StatusNotFound {
		t.Fatalf("LNURL of an unpaid quote: %d %v, want 404", code, lnurl)
	}
	if rec := inst.container(t, "cheap"); rec.State != deployer.StateQuoted || rec.BalanceMsat != 0 {
		t.Fatalf("after the refusals: %s with %d msat", rec.State, rec.BalanceMsat)
	}
	pay(t, quote)
	owner.Await(t, self, "cheap is running")
	if rec := inst.container(t, "cheap"); rec.BalanceMsat > 20_000 || rec.BalanceMsat < 19_000 {
		t.Errorf("paid quote of 20 sats: balance %d msat", rec.BalanceMsat)
	}
}
