package enclave

import (
	"time"

	"github.com/enclaved/enclaved/billing"
	"github.com/enclaved/enclaved/metrics"
)

// useMetrics has the instance's metrics (Parts.Metrics, if any) read its
// containers, invoices and ledger at each scrape.
func (in *Instance) useMetrics() {
	mx := in.parts.Metrics
	if mx == nil {
		return
	}
	mx.Records, mx.Invoices, mx.Ledger = in.Deployer.Records, in.Invoices, billing.NewLedger(in.parts.DB)
	mx.Capacity, mx.QuoteExpiry, mx.Now = in.cfg.Instance.CapacityUnits, in.cfg.Pricing.QuoteExpiry, in.now
	if mx.Log == nil {
		mx.Log = in.log.With("part", "metrics")
	}
}

// observe is the bot's Observe: it counts each command in mx (nil: none).
func observe(mx *metrics.Metrics) func(channel, outcome string, took time.Duration) {
	if mx == nil {
		return nil
	}
	return mx.Observe
}
