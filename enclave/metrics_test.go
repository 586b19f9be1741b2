package enclave_test

import (
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/enclaved/enclaved/enclave"
	"github.com/enclaved/enclaved/internal/testenv"
	"github.com/enclaved/enclaved/metrics"
)

// An instance's metrics on the real stack (relay, LND regtest, Docker):
// served on a listener of their own, never on the public HTTP host. Once
// a renter deployed and paid, promtool finds nothing wrong in them and a
// real Prometheus reads back what the operator would look for: the
// running container, its units, and exactly what the payer paid as
// credited. Nothing private is in them.
func TestMetricsOfARunningInstance(t *testing.T) {
	relay := testenv.Relay(t)
	imgs := testenv.Images(t)
	ml, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	inst := startInstanceWith(t, t.TempDir(), []string{relay.URL}, func(p *enclave.Parts) {
		p.Metrics, p.MetricsListener = metrics.New("test"), ml
	})
	owner := testenv.NewClient(t, relay.URL)
	inst.deploy(t, owner, "deploy "+imgs.Hello.Ref+" units=2 name=counted", "counted")
	rec := inst.container(t, "counted")
	owner.Send(t, "nip17", inst.key.PublicKey(), "frobnicate")
	owner.Await(t, inst.key.PublicKey(), "unknown command")

	resp, err := http.Get("http://" + inst.http + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /metrics on the public host: %s, want 404", resp.Status)
	}

	target := ml.Addr().String()
	body := testenv.Scrape(t, "http://"+target+"/metrics")
	testenv.PromtoolCheck(t, body)
	for _, private := range []string{owner.PK, rec.ID, rec.Name, rec.Pubkey, rec.Npub(), imgs.Hello.Digest, inst.key.PublicKey()} {
		if strings.Contains(string(body), private) {
			t.Errorf("the metrics show %q", private)
		}
	}

	var paid int64
	if err := inst.db.QueryRow(`SELECT amount_msat FROM invoices WHERE container_id = ? AND settled_at IS NOT NULL`, rec.ID).Scan(&paid); err != nil {
		t.Fatal(err)
	}
	prom := testenv.Prometheus(t, target)
	for _, w := range []struct {
		expr string
		want float64
	}{
		{`enclaved_containers{state="running"}`, 1},
		{`enclaved_containers{state="quoted"}`, 0},
		{`enclaved_units_used`, 2},
		{`enclaved_units_free`, 2},
		{`enclaved_quotes_waiting`, 0},
		{`enclaved_invoices_open{purpose="deploy"}`, 0},
		{`enclaved_credited_msat_total`, float64(paid)},
		// The bot's counts: the deploy DM answered, the mistyped one
		// answered as invalid, each reply timed.
		{`enclaved_bot_requests_total{channel="nip17",outcome="ok"}`, 1},
		{`enclaved_bot_requests_total{channel="nip17",outcome="invalid"}`, 1},
		{`enclaved_bot_reply_duration_seconds_count{channel="nip17"}`, 2},
	} {
		prom.Await(t, 30*time.Second, w.expr, w.want)
	}
}
