package metrics

import (
	"time"

	"github.com/credfactory/credfactory/store"
	"github.com/prometheus/client_golang/prometheus"
)

// SweepObserver records the expiry sweep (store.RunSweeper): rows it marked
// expired by kind, how long each run took, whether this replica holds the
// sweep lease, and failed runs.
type SweepObserver struct {
	rows     *prometheus.CounterVec
	duration prometheus.Histogram
	held     prometheus.Gauge
	errors   prometheus.Counter
}

// SweepObserver registers the sweep's metrics; call it once per Registry.
func (r *Registry) SweepObserver() *SweepObserver {
	o := &SweepObserver{
		rows: register(r, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "sweep", Name: "rows_total",
			Help: "Rows the expiry sweep marked expired (token, credential) or deleted (bulk_chunk: retry records of bulk bundle chunks whose tokens have all expired), by kind.",
		}, []string{"kind"})),
		duration: register(r, prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace, Subsystem: "sweep", Name: "duration_seconds",
			Help:    "Duration of one expiry sweep run (lease check included; a replica without the lease records its skip).",
			Buckets: requestBuckets,
		})),
		held: register(r, prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Subsystem: "sweep", Name: "lease_held",
			Help: "1 while this replica holds the expiry sweep's lease (exactly one replica should), else 0.",
		})),
		errors: register(r, prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "sweep", Name: "errors_total",
			Help: "Expiry sweep runs that failed (database unavailable, lease lost mid-run).",
		})),
	}
	// Every kind exists from the start, so a rate() over them is never empty.
	o.rows.WithLabelValues("token")
	o.rows.WithLabelValues("credential")
	o.rows.WithLabelValues("bulk_chunk")
	o.rows.WithLabelValues("claim_nonce")
	return o
}

// ObserveSweep records one run.
func (o *SweepObserver) ObserveSweep(res store.SweepResult, d time.Duration, err error) {
	o.duration.Observe(d.Seconds())
	o.rows.WithLabelValues("token").Add(float64(res.Tokens))
	o.rows.WithLabelValues("credential").Add(float64(res.Credentials))
	o.rows.WithLabelValues("bulk_chunk").Add(float64(res.BulkChunks))
	o.rows.WithLabelValues("claim_nonce").Add(float64(res.ClaimNonces))
	if res.Held {
		o.held.Set(1)
	} else {
		o.held.Set(0)
	}
	if err != nil {
		o.errors.Inc()
	}
}
