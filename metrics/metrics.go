package metrics

import (
	"errors"
	"time"

	"github.com/credfactory/credfactory/hsm"
	"github.com/credfactory/credfactory/store"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Namespace prefixes every metric.
const Namespace = "credfactory"

// HSM latencies: SoftHSM signs in ~150 us, network HSMs in ms; the pool
// wait can reach the configured timeout (seconds).
// requestBuckets cover a request or transaction: sub-millisecond commits up
// to the 10 s a client would long since have given up at.
var requestBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

var hsmBuckets = []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}

// Registry holds the process's metrics.
type Registry struct {
	*prometheus.Registry

	hsmOps        *prometheus.HistogramVec
	hsmErrors     *prometheus.CounterVec
	hsmWait       prometheus.Histogram
	hsmRecoveries *prometheus.CounterVec

	storeTx      *prometheus.HistogramVec
	storeRetries *prometheus.CounterVec
	storeErrors  *prometheus.CounterVec
	storeBatch   prometheus.Histogram

	tokensIssued *prometheus.CounterVec
	logins       *prometheus.CounterVec
	caExpiry     *prometheus.GaugeVec

	enrolments     *prometheus.CounterVec
	enrolDuration  *prometheus.HistogramVec
	forwardBatches prometheus.Histogram

	ocspResponses  *prometheus.CounterVec
	crlGenerations *prometheus.CounterVec
	crlDuration    prometheus.Histogram
	crlEntries     prometheus.Gauge

	HTTPRequests *prometheus.CounterVec
	HTTPDuration *prometheus.HistogramVec
	HTTPRejected *prometheus.CounterVec
	// Ready is the last /readyz result per check (1 ok, 0 failed): set
	// when a probe runs, so it is as fresh as the orchestrator's probes.
	Ready *prometheus.GaugeVec

	// Rate limits (README "Rate limits"): refusals and the configuration.
	rateLimited    *prometheus.CounterVec
	rateLimitRate  *prometheus.GaugeVec
	rateLimitBurst *prometheus.GaugeVec
}

// New registers the process, Go runtime and credfactory metrics. Each
// metric is registered where it is made (register), so none can be
// declared and then never exported; TestEveryMetricRegistered checks it.
func New() *Registry {
	r := &Registry{Registry: prometheus.NewRegistry()}
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	r.hsmOps = register(r, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Subsystem: "hsm", Name: "operation_duration_seconds",
		Help:    "HSM operation latency, session wait and recovery included, by operation.",
		Buckets: hsmBuckets,
	}, []string{"op"}))
	r.hsmErrors = register(r, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: "hsm", Name: "operation_errors_total",
		Help: "HSM operations that failed, by operation and error kind.",
	}, []string{"op", "kind"}))
	r.hsmWait = register(r, prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: Namespace, Subsystem: "hsm", Name: "pool_wait_seconds",
		Help:    "Time callers waited for a free HSM session.",
		Buckets: hsmBuckets,
	}))
	r.hsmRecoveries = register(r, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: "hsm", Name: "recoveries_total",
		Help: "Broken HSM sessions evicted and module re-initialisations, by cause.",
	}, []string{"kind"}))
	r.HTTPRequests = register(r, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: "http", Name: "requests_total",
		Help: "HTTP requests by route pattern and status code.",
	}, []string{"route", "code"}))
	r.HTTPDuration = register(r, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Subsystem: "http", Name: "request_duration_seconds",
		Help:    "HTTP request latency by route pattern.",
		Buckets: requestBuckets,
	}, []string{"route"}))
	r.HTTPRejected = register(r, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: "http", Name: "rejected_total",
		Help: "Requests refused before a handler ran or by the error mapper, by reason.",
	}, []string{"reason"}))
	r.Ready = register(r, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "ready",
		Help: "Result of the last readiness check of each dependency (hsm, store): 1 ready, 0 not. Updated when /readyz is probed.",
	}, []string{"check"}))
	r.storeTx = register(r, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Subsystem: "store", Name: "transaction_duration_seconds",
		Help:    "Registry transactions (each one commit) by operation, retries included.",
		Buckets: requestBuckets,
	}, []string{"op"}))
	r.storeRetries = register(r, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: "store", Name: "transaction_retries_total",
		Help: "Transaction attempts repeated after serialization failures (SQLSTATE 40001) or lost connections.",
	}, []string{"op"}))
	r.storeErrors = register(r, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: "store", Name: "transaction_errors_total",
		Help: "Registry transactions that failed, by operation and kind (unavailable, retries_exhausted: still conflicting after the whole retry budget, conflict, not_found, other).",
	}, []string{"op", "kind"}))
	r.storeBatch = register(r, prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: Namespace, Subsystem: "store", Name: "batch_items",
		Help:    "Redemptions committed per group-commit transaction.",
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024},
	}))
	r.enrolments = register(r, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "enrolments_total",
		Help: "Enrolments by path (est, est_reenroll, json_cert, json_key, forward_cert, forward_key) and result (ok, replayed or an error code).",
	}, []string{"path", "result"}))
	r.enrolDuration = register(r, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Name: "enrolment_duration_seconds",
		Help:    "Enrolment latency by path, from request to recorded credential.",
		Buckets: requestBuckets,
	}, []string{"path"}))
	r.forwardBatches = register(r, prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: Namespace, Name: "forward_batch_items",
		Help:    "Items per trusted-OBF forward batch.",
		Buckets: []float64{1, 10, 50, 100, 250, 500, 1000},
	}))
	r.tokensIssued = register(r, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "tokens_issued_total",
		Help: "Enrolment tokens issued by the portal, by mode (trusted, untrusted). Redemptions are enrolments_total; refusals there carry token_expired, token_redeemed, ...",
	}, []string{"mode"}))
	r.logins = register(r, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: "portal", Name: "logins_total",
		Help: "Portal logins by result (ok, bad_credentials, too_many_attempts, stakeholder_disabled: told apart here, never in the answer).",
	}, []string{"result"}))
	r.caExpiry = register(r, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "ca_certificate_expiry_timestamp_seconds",
		Help: "NotAfter of the SP's own certificates (root, issuing, obf, server), as a Unix time.",
	}, []string{"ca"}))
	r.rateLimited = register(r, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "rate_limited_total",
		Help: "Requests refused with 429 by a rate limit, by limit (enrol_source, enrol_tenant, enrol_obf, token_tenant, login_source, login_account).",
	}, []string{"limit"}))
	r.rateLimitRate = register(r, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "rate_limit_per_second",
		Help: "Configured sustained rate per key of each rate limit, on this replica (0: the limit is off).",
	}, []string{"limit"}))
	r.rateLimitBurst = register(r, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "rate_limit_burst",
		Help: "Configured burst per key of each rate limit, on this replica.",
	}, []string{"limit"}))
	r.ocspResponses = register(r, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: "ocsp", Name: "responses_total",
		Help: "OCSP responses by status (good, revoked, unknown, unauthorized, malformed, try_later, internal_error).",
	}, []string{"status"}))
	r.crlGenerations = register(r, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: "crl", Name: "generations_total",
		Help: "CRL generations of the issuing CA by result (ok, error).",
	}, []string{"result"}))
	r.crlDuration = register(r, prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: Namespace, Subsystem: "crl", Name: "generation_duration_seconds",
		Help:    "Time to read the revoked serials and sign one CRL.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	}))
	r.crlEntries = register(r, prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace, Subsystem: "crl", Name: "entries",
		Help: "Revoked certificates listed on the current CRL.",
	}))
	return r
}

// register adds c to r and returns it.
func register[C prometheus.Collector](r *Registry, c C) C {
	r.MustRegister(c)
	return c
}

// HSMObserver returns the hsm.Observer that feeds these metrics.
func (r *Registry) HSMObserver() hsm.Observer { return hsmObserver{r} }

// WatchHSMPool exports the pool's gauges, read at scrape time.
func (r *Registry) WatchHSMPool(stats func() hsm.Stats) {
	gauge := func(state string, get func(hsm.Stats) int) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: Namespace, Subsystem: "hsm", Name: "pool_sessions",
			Help:        "HSM pool sessions by state (max is the configured size).",
			ConstLabels: prometheus.Labels{"state": state},
		}, func() float64 { return float64(get(stats())) })
	}
	r.MustRegister(
		gauge("max", func(s hsm.Stats) int { return s.Max }),
		gauge("in_use", func(s hsm.Stats) int { return s.InUse }),
		gauge("idle", func(s hsm.Stats) int { return s.Idle }),
		gauge("waiting", func(s hsm.Stats) int { return s.Waiting }),
	)
}

type hsmObserver struct{ r *Registry }

func (o hsmObserver) ObserveOp(op string, d time.Duration, err error) {
	o.r.hsmOps.WithLabelValues(op).Observe(d.Seconds())
	if err != nil {
		o.r.hsmErrors.WithLabelValues(op, hsm.ErrorKind(err)).Inc()
	}
}

func (o hsmObserver) ObserveWait(d time.Duration) { o.r.hsmWait.Observe(d.Seconds()) }

func (o hsmObserver) ObserveRecovery(kind string) { o.r.hsmRecoveries.WithLabelValues(kind).Inc() }

// StoreObserver returns the store.Observer that feeds these metrics.
func (r *Registry) StoreObserver() store.Observer { return storeObserver{r} }

type storeObserver struct{ r *Registry }

func (o storeObserver) ObserveTx(op string, d time.Duration, retries int, err error) {
	o.r.storeTx.WithLabelValues(op).Observe(d.Seconds())
	if retries > 0 {
		o.r.storeRetries.WithLabelValues(op).Add(float64(retries))
	}
	if err != nil {
		o.r.storeErrors.WithLabelValues(op, storeErrorKind(err)).Inc()
	}
}

func (o storeObserver) ObserveBatch(items int) { o.r.storeBatch.Observe(float64(items)) }

func storeErrorKind(err error) string {
	switch {
	case errors.Is(err, store.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, store.ErrContention):
		return "retries_exhausted"
	case errors.Is(err, store.ErrConflict):
		return "conflict"
	case errors.Is(err, store.ErrNotFound):
		return "not_found"
	}
	return "other"
}

// MEFObserver returns the mef.Observer that feeds these metrics. Result
// labels are error codes, a fixed vocabulary, never IDs.
func (r *Registry) MEFObserver() MEFObserver { return MEFObserver{r} }

// MEFObserver implements mef.Observer.
type MEFObserver struct{ r *Registry }

// ObserveEnrolment counts one enrolment and its latency.
func (o MEFObserver) ObserveEnrolment(path, result string, d time.Duration) {
	o.r.enrolments.WithLabelValues(path, result).Inc()
	o.r.enrolDuration.WithLabelValues(path).Observe(d.Seconds())
}

// ObserveForwardBatch records a forward batch's size.
func (o MEFObserver) ObserveForwardBatch(items int) { o.r.forwardBatches.Observe(float64(items)) }

// SetCertificateExpiry publishes when one of the SP's own certificates
// expires, for the expiry alert.
func (r *Registry) SetCertificateExpiry(name string, notAfter time.Time) {
	r.caExpiry.WithLabelValues(name).Set(float64(notAfter.Unix()))
}

// PortalObserver returns the portal.Observer that feeds these metrics.
func (r *Registry) PortalObserver() PortalObserver { return PortalObserver{r} }

// PortalObserver implements portal.Observer.
type PortalObserver struct{ r *Registry }

// ObserveLogin counts a login attempt by result.
func (o PortalObserver) ObserveLogin(result string) { o.r.logins.WithLabelValues(result).Inc() }

// ObserveTokenIssued counts an enrolment token by mode.
func (o PortalObserver) ObserveTokenIssued(mode string) { o.r.tokensIssued.WithLabelValues(mode).Inc() }

// RateLimitObserver returns the ratelimit.Observer that feeds these metrics.
func (r *Registry) RateLimitObserver() RateLimitObserver { return RateLimitObserver{r} }

// RateLimitObserver implements ratelimit.Observer. The label is the limit's
// name, never the key (an address or tenant would be unbounded).
type RateLimitObserver struct{ r *Registry }

// ObserveRateLimited counts one refusal.
func (o RateLimitObserver) ObserveRateLimited(limit string) {
	o.r.rateLimited.WithLabelValues(limit).Inc()
}

// ObserveLimit publishes a limit's configuration, and makes its refusal
// counter visible at 0 before the first refusal.
func (o RateLimitObserver) ObserveLimit(limit string, perSecond float64, burst int) {
	o.r.rateLimitRate.WithLabelValues(limit).Set(perSecond)
	o.r.rateLimitBurst.WithLabelValues(limit).Set(float64(burst))
	o.r.rateLimited.WithLabelValues(limit)
}

// CAStatusObserver returns the castatus.Observer that feeds these metrics.
func (r *Registry) CAStatusObserver() CAStatusObserver { return CAStatusObserver{r} }

// CAStatusObserver implements castatus.Observer.
type CAStatusObserver struct{ r *Registry }

// ObserveCRL records one CRL generation.
func (o CAStatusObserver) ObserveCRL(d time.Duration, entries int, err error) {
	if err != nil {
		o.r.crlGenerations.WithLabelValues("error").Inc()
		return
	}
	o.r.crlGenerations.WithLabelValues("ok").Inc()
	o.r.crlDuration.Observe(d.Seconds())
	o.r.crlEntries.Set(float64(entries))
}

// ObserveOCSP counts one OCSP response by status.
func (o CAStatusObserver) ObserveOCSP(status string) { o.r.ocspResponses.WithLabelValues(status).Inc() }
