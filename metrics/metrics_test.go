package metrics

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/credfactory/credfactory/hsm"
	"github.com/credfactory/credfactory/store"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

// TestObserversFeedMetrics: what the HSM pool and the store report reaches
// the exported series, with bounded labels.
func TestObserversFeedMetrics(t *testing.T) {
	r := New()
	r.WatchHSMPool(func() hsm.Stats { return hsm.Stats{Max: 4, InUse: 3, Waiting: 7, Idle: 1} })
	h := r.HSMObserver()
	h.ObserveOp("ecdsa_sign", time.Millisecond, nil)
	h.ObserveOp("ecdsa_sign", time.Millisecond, fmt.Errorf("sign: %w", hsm.ErrPoolTimeout))
	h.ObserveRecovery("session_broken")
	s := r.StoreObserver()
	s.ObserveTx("redeem_batch", 2*time.Millisecond, 3, nil)
	s.ObserveTx("redeem_batch", time.Millisecond, 0, fmt.Errorf("x: %w", store.ErrUnavailable))
	s.ObserveTx("revoke", time.Millisecond, 0, errors.New("boom"))
	s.ObserveTx("create_enrolment", time.Millisecond, 10, fmt.Errorf("x: %w", store.ErrContention))
	s.ObserveBatch(32)
	m := r.MEFObserver()
	m.ObserveEnrolment("est", "ok", 3*time.Millisecond)
	m.ObserveEnrolment("est", "token_redeemed", time.Millisecond)
	m.ObserveForwardBatch(100)
	po := r.PortalObserver()
	po.ObserveLogin("ok")
	po.ObserveLogin("bad_credentials")
	po.ObserveTokenIssued("untrusted")
	r.SetCertificateExpiry("root", time.Unix(2000000000, 0))

	families, err := r.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	for _, f := range families {
		if _, err := expfmt.MetricFamilyToText(&text, f); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{
		`credfactory_hsm_operation_duration_seconds_count{op="ecdsa_sign"} 2`,
		`credfactory_hsm_operation_errors_total{kind="pool_timeout",op="ecdsa_sign"} 1`,
		`credfactory_hsm_recoveries_total{kind="session_broken"} 1`,
		`credfactory_hsm_pool_sessions{state="waiting"} 7`,
		`credfactory_store_transaction_retries_total{op="redeem_batch"} 3`,
		`credfactory_store_transaction_errors_total{kind="unavailable",op="redeem_batch"} 1`,
		`credfactory_store_transaction_errors_total{kind="other",op="revoke"} 1`,
		`credfactory_store_transaction_errors_total{kind="retries_exhausted",op="create_enrolment"} 1`,
		`credfactory_store_transaction_retries_total{op="create_enrolment"} 10`,
		`credfactory_store_batch_items_sum 32`,
		`credfactory_enrolments_total{path="est",result="ok"} 1`,
		`credfactory_enrolments_total{path="est",result="token_redeemed"} 1`,
		`credfactory_enrolment_duration_seconds_count{path="est"} 2`,
		`credfactory_forward_batch_items_sum 100`,
		`credfactory_portal_logins_total{result="bad_credentials"} 1`,
		`credfactory_tokens_issued_total{mode="untrusted"} 1`,
		`credfactory_ca_certificate_expiry_timestamp_seconds{ca="root"} 2e+09`,
	} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("missing %s", want)
		}
	}
}

// TestRateLimitMetrics: the limits' configuration and refusals are
// exported by limit name (README "Rate limits").
func TestRateLimitMetrics(t *testing.T) {
	r := New()
	o := r.RateLimitObserver()
	o.ObserveLimit("login_source", 0.5, 10)
	o.ObserveLimit("enrol_obf", 0, 0)
	o.ObserveRateLimited("login_source")
	o.ObserveRateLimited("login_source")
	families, err := r.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	for _, f := range families {
		if _, err := expfmt.MetricFamilyToText(&text, f); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{
		`credfactory_rate_limit_per_second{limit="login_source"} 0.5`,
		`credfactory_rate_limit_burst{limit="login_source"} 10`,
		`credfactory_rate_limit_per_second{limit="enrol_obf"} 0`,
		`credfactory_rate_limited_total{limit="login_source"} 2`,
		`credfactory_rate_limited_total{limit="enrol_obf"} 0`,
	} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("missing %s", want)
		}
	}
}

// TestEveryMetricRegistered: every collector a Registry or SweepObserver
// holds is registered with the Registry, so none is declared and then never
// exported. It reads the fields by reflection, so a metric added later is
// covered without touching this test; registering one again must answer
// AlreadyRegisteredError.
func TestEveryMetricRegistered(t *testing.T) {
	r := New()
	sweep := r.SweepObserver()
	collectorType := reflect.TypeFor[prometheus.Collector]()
	total := 0
	for _, holder := range []any{r, sweep} {
		v := reflect.ValueOf(holder).Elem()
		for i := range v.NumField() {
			f := v.Type().Field(i)
			if f.Anonymous || !f.Type.Implements(collectorType) {
				continue
			}
			total++
			fv := v.Field(i)
			// Unexported fields: read through their address (test only).
			c := reflect.NewAt(fv.Type(), unsafe.Pointer(fv.UnsafeAddr())).Elem().Interface().(prometheus.Collector)
			err := r.Register(c)
			var already prometheus.AlreadyRegisteredError
			if !errors.As(err, &already) {
				t.Errorf("%s.%s is not registered (Register again: %v)", v.Type().Name(), f.Name, err)
				if err == nil {
					r.Unregister(c)
				}
			}
		}
	}
	if total < 25 {
		t.Fatalf("found %d metric fields; the reflection no longer sees them", total)
	}
}
