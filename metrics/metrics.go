// Package metrics is the operator's view of a running instance: a
// Prometheus endpoint (GET /metrics, the text format) on a listener of its
// own, never on the public HTTP host. It counts the bot's commands and
// times its replies, and reads the rest afresh at each scrape from the
// packages that own it (containers by state and units from records;
// invoices, credits and debits from billing; backups, link streams and
// containers' egress refusals from their packages).
//
// It runs in the enclave, but what it serves reaches the untrusted parent
// (which forwards the operator's scrapes) in the clear, so it holds
// nothing private: every label is a fixed word (a channel, an outcome, a
// state), never a pubkey, npub, container name or image.
package metrics

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/enclaved/enclaved/backup"
	"github.com/enclaved/enclaved/billing"
	"github.com/enclaved/enclaved/egressproxy"
	"github.com/enclaved/enclaved/link"
	"github.com/enclaved/enclaved/records"
)

// The bot's channels and outcomes (bot.Config.Observe); anything else is
// counted as "other".
var (
	Channels = []string{"nip17", "nip04", "mention", "rpc"}
	Outcomes = []string{"ok", "refused", "failed", "rate_limited", "invalid"}
)

// Metrics are an instance's metrics. Create them with New and set the
// sources the instance has before Serve; a nil source's metrics are not
// shown.
type Metrics struct {
	Records  *records.Store
	Ledger   *billing.Ledger
	Invoices *billing.Invoices
	// Capacity is the units the instance rents out; QuoteExpiry how long
	// a quote waits for payment (pricing.quote_expiry).
	Capacity    int64
	QuoteExpiry time.Duration
	Backups     *backup.Backuper
	Link        *link.Keeper         // the enclave's link to its parent
	Egress      *egressproxy.Manager // containers' egress proxies
	Now         func() time.Time     // default time.Now
	Log         *slog.Logger

	reg            *prometheus.Registry
	requests       *prometheus.CounterVec
	replies        *prometheus.HistogramVec
	backupTook     prometheus.Histogram
	backupFailures prometheus.Counter
}

// New returns the metrics of an instance running version.
func New(version string) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "enclaved_bot_requests_total",
		Help: "Commands the bot answered or refused (DMs, mentions, RPC requests), by channel and outcome."}, []string{"channel", "outcome"})
	m.replies = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "enclaved_bot_reply_duration_seconds",
		Help:    "Time from reading a command to publishing its reply, by channel.",
		Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}}, []string{"channel"})
	m.backupTook = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "enclaved_backup_duration_seconds",
		Help:    "Time each backup that was recorded took (snapshot, encryption, transfer to the parent, checkpoint).",
		Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300}})
	m.backupFailures = prometheus.NewCounter(prometheus.CounterOpts{Name: "enclaved_backup_failures_total",
		Help: "Backups tried that failed (retried with backoff)."})
	for _, c := range Channels {
		m.replies.WithLabelValues(c)
		for _, o := range Outcomes {
			m.requests.WithLabelValues(c, o)
		}
	}
	info := prometheus.NewGauge(prometheus.GaugeOpts{Name: "enclaved_build_info",
		Help: "Always 1; its label is the running version.", ConstLabels: prometheus.Labels{"version": version}})
	info.Set(1)
	m.reg.MustRegister(m.requests, m.replies, m.backupTook, m.backupFailures, info, state{m},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Observe counts one command of the bot (bot.Config.Observe).
func (m *Metrics) Observe(channel, outcome string, took time.Duration) {
	if !slices.Contains(Channels, channel) {
		channel = "other"
	}
	if !slices.Contains(Outcomes, outcome) {
		outcome = "other"
	}
	m.requests.WithLabelValues(channel, outcome).Inc()
	m.replies.WithLabelValues(channel).Observe(max(took, 0).Seconds())
}

// BackupDone counts one backup tried (backup.Backuper.Observe).
func (m *Metrics) BackupDone(took time.Duration, err error) {
	if err != nil {
		m.backupFailures.Inc()
		return
	}
	m.backupTook.Observe(took.Seconds())
}

// Handler serves GET /metrics, and 404 for anything else.
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError, MaxRequestsInFlight: 4, Timeout: 20 * time.Second}))
	return mux
}

// Serve serves the metrics on l until ctx ends (then it closes l and
// returns nil).
func (m *Metrics) Serve(ctx context.Context, l net.Listener) error {
	srv := &http.Server{Handler: m.Handler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10,
		ErrorLog: slog.NewLogLogger(m.log().Handler(), slog.LevelWarn)}
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	})
	defer stop()
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func (m *Metrics) log() *slog.Logger {
	if m.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return m.Log
}

func (m *Metrics) now() time.Time {
	if m.Now == nil {
		return time.Now()
	}
	return m.Now()
}
