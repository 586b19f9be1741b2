package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/enclaved/enclaved/egressproxy"
	"github.com/enclaved/enclaved/link"
	"github.com/enclaved/enclaved/records"
)

// Invoice purposes (billing), the values of enclaved_invoices_open's label.
var purposes = []string{"deploy", "topup", "zap", "lnurl"}

// readTimeout bounds a scrape's reads of the database.
const readTimeout = 10 * time.Second

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	containersDesc = desc("enclaved_containers", "Containers by state, as stored (quotes and removed ones too).", "state")
	capacityDesc   = desc("enclaved_units_capacity", "Units the instance rents out (instance.capacity_units).")
	usedDesc       = desc("enclaved_units_used", "Units held by containers that run or may run again (running, starting, paused, stopped, exited).")
	freeDesc       = desc("enclaved_units_free", "Units not held by any container: what a deploy can still get.")
	quotesDesc     = desc("enclaved_quotes_waiting", "Quotes waiting for payment (what pricing.open_quotes caps).")
	invoicesDesc   = desc("enclaved_invoices_open", "Invoices that can still be paid (unpaid, not cancelled, not expired), by purpose.", "purpose")
	creditedDesc   = desc("enclaved_credited_msat_total", "Millisatoshis credited to containers so far (every ledger credit).")
	debitedDesc    = desc("enclaved_debited_msat_total", "Millisatoshis charged for running time so far (every ledger debit).")
	unclaimedDesc  = desc("enclaved_unclaimed_msat_total", "Millisatoshis paid for containers already removed, credited to nothing (enclaved audit lists them).")
	backupAgeDesc  = desc("enclaved_backup_age_seconds", "Seconds since the newest recorded backup was taken.")
	backupSizeDesc = desc("enclaved_backup_size_bytes", "Size of the newest recorded backup's database blob (encrypted; container volumes not counted).")
	streamsDesc    = desc("enclaved_link_streams_open", "Link streams open now, by service and by the side that opened them.", "service", "opened_by")
	openedDesc     = desc("enclaved_link_streams_opened_total", "Link streams opened so far (over every session), by service and by the side that opened them.", "service", "opened_by")
	refusedDesc    = desc("enclaved_container_egress_refused_total", "Containers' outbound connections refused by their egress proxies, by reason.", "reason")
)

// state is the collector of what is read afresh at each scrape, from the
// packages that own it.
type state struct{ m *Metrics }

func (s state) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{containersDesc, capacityDesc, usedDesc, freeDesc, quotesDesc, invoicesDesc,
		creditedDesc, debitedDesc, unclaimedDesc, backupAgeDesc, backupSizeDesc, streamsDesc, openedDesc, refusedDesc} {
		ch <- d
	}
}

func (s state) Collect(ch chan<- prometheus.Metric) {
	m := s.m
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	failed := func(what string, err error) {
		m.log().Warn("metrics: cannot read "+what, "err", err)
	}
	now := m.now()
	if r := m.Records; r != nil {
		if n, err := r.CountByState(ctx); err != nil {
			failed("containers", err)
		} else {
			for _, st := range records.States {
				gauge(containersDesc, float64(n[st]), st)
			}
		}
		if used, err := r.UsedUnits(ctx, ""); err != nil {
			failed("units", err)
		} else {
			gauge(capacityDesc, float64(m.Capacity))
			gauge(usedDesc, float64(used))
			gauge(freeDesc, float64(max(m.Capacity-used, 0)))
		}
		if w, err := r.QuotesWaiting(ctx, "", "", now.Add(-m.QuoteExpiry)); err != nil {
			failed("quotes", err)
		} else {
			gauge(quotesDesc, float64(w.All))
		}
	}
	if v := m.Invoices; v != nil {
		if n, err := v.Open(ctx); err != nil {
			failed("invoices", err)
		} else {
			for _, p := range purposes {
				gauge(invoicesDesc, float64(n[p]), p)
			}
		}
	}
	if l := m.Ledger; l != nil {
		if t, err := l.Totals(ctx); err != nil {
			failed("ledger", err)
		} else {
			counter(creditedDesc, float64(t.Credited))
			counter(debitedDesc, float64(t.Debited))
			counter(unclaimedDesc, float64(t.Unclaimed))
		}
	}
	if b := m.Backups; b != nil {
		if at, size, ok := b.Recorded(); ok {
			gauge(backupAgeDesc, max(now.Sub(at), 0).Seconds())
			gauge(backupSizeDesc, float64(size))
		}
	}
	if k := m.Link; k != nil {
		for svc := link.Dial; svc <= link.Log; svc++ {
			c := k.Counts(svc)
			for i, side := range []string{"enclave", "parent"} { // the keeper is the enclave's
				gauge(streamsDesc, float64(c.Open[i]), svc.String(), side)
				counter(openedDesc, float64(c.Opened[i]), svc.String(), side)
			}
		}
	}
	if e := m.Egress; e != nil {
		n := e.Refusals()
		for _, r := range egressproxy.RefusalReasons {
			counter(refusedDesc, float64(n[r]), r)
		}
	}
}
