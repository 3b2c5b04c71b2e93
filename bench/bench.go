package bench

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/credfactory/credfactory/client"
)

// Paths the bench drives.
const (
	PathEST        = "est"         // untrusted RSPF, certificates over EST, keep-alive
	PathESTNewConn = "est-newconn" // the same with a new TLS connection per enrolment
	// PathESTResume is a new TLS connection per enrolment that resumes a
	// session from an earlier one (RFC 8446 §2.2): devices renewing, an
	// OBS or Target reconnecting, where est-newconn is a device's first.
	PathESTResume = "est-resume"
	PathPSK       = "psk"        // untrusted RSPF, shared keys in exporter mode (TS-0003): one TLS connection per enrolment
	PathPSKMaster = "psk-master" // the same in master mode (the MEF sends the key), keep-alive
	PathForward   = "forward"    // trusted OBS forwarding of device CSRs, in batches: each item an issuance
	// PathForwardKey is trusted OBS forwarding of shared keys the OBS
	// generated and loaded into its devices (TS-0003 §8.3.3 forwarding
	// path): no issuance, each item sealed by the KEK and recorded.
	PathForwardKey = "forward-key"
	// PathToken is the portal's enrolment-bundle request, one device per
	// request with its claim code as proof: what a factory line calls per
	// device before any enrolment path. Its rate counts tokens, which the
	// registry verification does not (the devices stay token-issued).
	PathToken = "token"
)

// Target is the server under test and the accounts the bench uses.
type Target struct {
	Base   string
	Anchor []*x509.Certificate
	// Manufacturer pre-enrols devices and proves control with their claim
	// codes; Admin registers the bench's OBS.
	ManufacturerKey, AdminKey, OwnerName string
	// SPDomain is the host of device URIs (portal.sp_domain): the bench's
	// OBS names its certificates as the SP requires.
	SPDomain string
	// Metrics reads the server's /metrics (HSM ops, commits); nil to skip.
	Metrics func(ctx context.Context) (map[string]float64, error)
	// Ops is the server's operations listener URL, when the bench started
	// the server itself.
	Ops string
}

// Config is one bench run.
type Config struct {
	Paths       []string
	Concurrency []int
	BatchSizes  []int // forwarding
	Duration    time.Duration
	// Tokens is how many enrolments each step may make at most (tokens are
	// issued before the step; a step ends at Duration or when they run out).
	Tokens int
	// Retry is how long one enrolment keeps being retried, with the same
	// token and request, after a failure the server asked to retry (503,
	// 429: after its Retry-After) or a lost connection: what a device does
	// while a replica or the database fails over. 0: no retries, every
	// failure counts in Errors.
	Retry time.Duration
	// OnStep, if set, is called as each step's timed part starts (after its
	// tokens are issued): a fault test breaks the fleet from there.
	OnStep func(path string)
}

// Result is one step: a path at one concurrency (and batch size).
type Result struct {
	Path          string         `json:"path"`
	Concurrency   int            `json:"concurrency"`
	BatchSize     int            `json:"batchSize,omitempty"`
	Enrolments    int            `json:"enrolments"`
	Seconds       float64        `json:"seconds"`
	PerSecond     float64        `json:"enrolmentsPerSecond"`
	P50           time.Duration  `json:"p50"`
	P90           time.Duration  `json:"p90"`
	P99           time.Duration  `json:"p99"`
	Max           time.Duration  `json:"max"`
	Errors        map[string]int `json:"errors,omitempty"`
	HSMOpsPerSec  float64        `json:"hsmOpsPerSecond"`
	CommitsPerSec float64        `json:"commitsPerSecond"`
	// ServerCPUPerEnrolment is the server's CPU time (user and system,
	// process_cpu_seconds_total) per enrolment over the step: the figure
	// that compares servers on a shared machine, where enrolments/s moves
	// with whatever else runs.
	ServerCPUPerEnrolment time.Duration `json:"serverCpuPerEnrolment,omitempty"`
	// With Config.Retry: failures that were retried, by code ("transport"
	// for a lost connection), 503s that came without Retry-After, and the
	// first and last retried failure: the outage as clients saw it.
	Retried      map[string]int `json:"retried,omitempty"`
	NoRetryAfter int            `json:"noRetryAfter,omitempty"`
	FirstRetried time.Time      `json:"firstRetried,omitzero"`
	LastRetried  time.Time      `json:"lastRetried,omitzero"`
}

// Runner holds a target and its prepared state.
type Runner struct {
	t      Target
	conn   *client.Conn
	nextID atomic.Int64
	obs    *obsIdentity
	led    ledger
	out    io.Writer
	// Progress redraws a live count on out during each step (a terminal).
	Progress bool
}

// NewRunner prepares a run against t; progress lines go to out.
func NewRunner(t Target, out io.Writer) *Runner {
	return &Runner{t: t, conn: client.NewConn(t.Base, t.Anchor, nil), out: out}
}

// Run runs every step of cfg.
func (r *Runner) Run(ctx context.Context, cfg Config) ([]Result, error) {
	var results []Result
	for _, path := range cfg.Paths {
		batches := []int{0}
		if forwards(path) {
			batches = cfg.BatchSizes
		}
		for _, batch := range batches {
			for _, c := range cfg.Concurrency {
				res, err := r.step(ctx, path, c, batch, cfg)
				if err != nil {
					return results, fmt.Errorf("%s at %d: %w", path, c, err)
				}
				results = append(results, res)
				fmt.Fprintf(r.out, "  %-12s c=%-4d batch=%-5d %8.0f/s  p99 %-10v errors %d\n", path, c, batch, res.PerSecond,
					res.P99.Round(time.Microsecond), res.ErrorCount())
			}
		}
	}
	return results, nil
}

// forwards reports whether path is a trusted OBS's batched forwarding.
func forwards(path string) bool { return path == PathForward || path == PathForwardKey }

// ErrorCount is how many requests of the step failed, whatever the code.
func (r Result) ErrorCount() int {
	n := 0
	for _, v := range r.Errors {
		n += v
	}
	return n
}

// step prepares its work (not timed), then runs it for cfg.Duration.
func (r *Runner) step(ctx context.Context, path string, concurrency, batch int, cfg Config) (Result, error) {
	// At least two batches: more would make setup (tokens are issued one
	// by one through the portal) dwarf the step itself.
	n := cfg.Tokens
	if forwards(path) && batch > 0 {
		n = max(n, 2*batch)
		n -= n % batch
	}
	fmt.Fprintf(r.out, "  preparing %s c=%d: %d devices and tokens...\n", path, concurrency, n)
	work, err := r.prepare(ctx, path, n, batch)
	if err != nil {
		return Result{}, err
	}
	before := r.metrics(ctx)
	res := Result{Path: path, Concurrency: concurrency, BatchSize: batch, Errors: map[string]int{}, Retried: map[string]int{}}
	var mu sync.Mutex
	var lat []time.Duration
	var next atomic.Int64
	if cfg.OnStep != nil {
		cfg.OnStep(path)
	}
	deadline := time.Now().Add(cfg.Duration)
	start := time.Now()
	var progress atomic.Int64
	stopProgress := r.showProgress(path, concurrency, start, cfg.Duration, &progress)
	var wg sync.WaitGroup
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			errs, retried := map[string]int{}, map[string]int{}
			var noRetryAfter int
			var first, last time.Time
			done := 0
			for time.Now().Before(deadline) {
				i := int(next.Add(1)) - 1
				if i >= len(work) {
					break
				}
				t0 := time.Now()
				k, err := work[i](ctx)
				for err != nil && cfg.Retry > 0 && retryable(err) && time.Since(t0) < cfg.Retry && ctx.Err() == nil {
					now := time.Now()
					if first.IsZero() {
						first = now
					}
					last = now
					retried[code(err)]++
					wait := 100 * time.Millisecond
					var e *client.Error
					if errors.As(err, &e) && e.RetryAfter > 0 {
						wait = e.RetryAfter
					} else if errors.As(err, &e) && e.Status == http.StatusServiceUnavailable {
						noRetryAfter++
					}
					time.Sleep(wait)
					k, err = work[i](ctx)
				}
				d := time.Since(t0)
				if err != nil {
					errs[code(err)]++
					continue
				}
				done += k
				progress.Add(int64(k))
				mine = append(mine, d)
			}
			mu.Lock()
			lat = append(lat, mine...)
			res.Enrolments += done
			for k, v := range errs {
				res.Errors[k] += v
			}
			for k, v := range retried {
				res.Retried[k] += v
			}
			res.NoRetryAfter += noRetryAfter
			if !first.IsZero() && (res.FirstRetried.IsZero() || first.Before(res.FirstRetried)) {
				res.FirstRetried = first
			}
			if last.After(res.LastRetried) {
				res.LastRetried = last
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	stopProgress()
	res.Seconds = time.Since(start).Seconds()
	res.PerSecond = float64(res.Enrolments) / res.Seconds
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if len(lat) > 0 {
		q := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
		res.P50, res.P90, res.P99, res.Max = q(.5), q(.9), q(.99), lat[len(lat)-1]
	}
	after := r.metrics(ctx)
	if before != nil && after != nil {
		res.HSMOpsPerSec = (after["hsm_ops"] - before["hsm_ops"]) / res.Seconds
		res.CommitsPerSec = (after["commits"] - before["commits"]) / res.Seconds
		if res.Enrolments > 0 {
			cpu := after["cpu_seconds"] - before["cpu_seconds"]
			res.ServerCPUPerEnrolment = time.Duration(cpu / float64(res.Enrolments) * float64(time.Second))
		}
	}
	return res, nil
}

// showProgress redraws a live count of done enrolments on r.out every
// 250 ms when r.Progress is set, until the returned stop is called; stop
// clears the line and returns once nothing more will be written.
func (r *Runner) showProgress(path string, concurrency int, start time.Time, d time.Duration, done *atomic.Int64) (stop func()) {
	if !r.Progress {
		return func() {}
	}
	quit, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-quit:
				fmt.Fprint(r.out, "\r\033[K")
				return
			case <-t.C:
				el := time.Since(start)
				bar := strings.Repeat("#", int(20*min(1, el.Seconds()/d.Seconds())))
				fmt.Fprintf(r.out, "\r  [%-20s] %s c=%d: %d enrolments, %.0f/s", bar, path, concurrency, done.Load(),
					float64(done.Load())/el.Seconds())
			}
		}
	}()
	return func() {
		close(quit)
		<-finished
	}
}

func (r *Runner) metrics(ctx context.Context) map[string]float64 {
	if r.t.Metrics == nil {
		return nil
	}
	m, err := r.t.Metrics(ctx)
	if err != nil {
		return nil
	}
	return m
}

func code(err error) string {
	var e *client.Error
	var r refused
	switch {
	case errors.As(err, &e):
		return e.Code
	case errors.As(err, &r):
		return string(r)
	}
	return "transport"
}

// MetricsFrom reads /metrics from the server's operations listener (base
// is its URL, e.g. http://127.0.0.1:9090: server.ops_listen, plain HTTP)
// and sums what the report uses: HSM operations, registry transactions
// (each one commit) and the process's CPU seconds.
func MetricsFrom(base string) func(ctx context.Context) (map[string]float64, error) {
	hc := &http.Client{Timeout: 10 * time.Second}
	return func(ctx context.Context) (map[string]float64, error) {
		req, _ := http.NewRequestWithContext(ctx, "GET", strings.TrimSuffix(base, "/")+"/metrics", nil)
		resp, err := hc.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET %s/metrics: %s", base, resp.Status)
		}
		out := map[string]float64{}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			var key string
			switch {
			case strings.HasPrefix(line, "credfactory_hsm_operation_duration_seconds_count{"):
				key = "hsm_ops"
			case strings.HasPrefix(line, "credfactory_store_transaction_duration_seconds_count{"):
				key = "commits"
			case strings.HasPrefix(line, "process_cpu_seconds_total "):
				key = "cpu_seconds"
			default:
				continue
			}
			if v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64); err == nil {
				out[key] += v
			}
		}
		return out, sc.Err()
	}
}

func newKey() *ecdsa.PrivateKey {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	return k
}

// retryable: what a client retries with the same request: what
// client.Retryable says, and 409 registry_contention, which README
// "Registry retries" says may be sent again as it is. A forward batch with
// refused items is retried only for an outage or contention: the items
// already recorded then answer "replayed".
func retryable(err error) bool {
	var r refused
	if errors.As(err, &r) {
		return r == "registry_unavailable" || r == "registry_contention"
	}
	var e *client.Error
	if errors.As(err, &e) && e.Code == "registry_contention" {
		return true
	}
	return client.Retryable(err)
}

// refused is a forward batch with refused items, by the first item's code.
type refused string

func (r refused) Error() string { return "refused: " + string(r) }
