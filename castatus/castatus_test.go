package castatus

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credfactory/credfactory/apierr"
	"github.com/credfactory/credfactory/ca"
	"github.com/credfactory/credfactory/ca/catest"
	"github.com/credfactory/credfactory/crlreason"
	"github.com/credfactory/credfactory/httpapi"
	"github.com/credfactory/credfactory/ratelimit"
	"github.com/credfactory/credfactory/store"
	"github.com/credfactory/credfactory/store/storetest"
	"github.com/valyala/fasthttp"
	"golang.org/x/crypto/ocsp"
)

type fixture struct {
	t     *testing.T
	pki   *catest.PKI
	other *catest.PKI
	st    *store.Store
	svc   *Service
	clock atomic.Int64
	obs   *countObserver
}

type countObserver struct {
	crls atomic.Int64
	ocsp map[string]int
}

func (o *countObserver) ObserveCRL(time.Duration, int, error) { o.crls.Add(1) }
func (o *countObserver) ObserveOCSP(s string)                 { o.ocsp[s]++ }

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{t: t, pki: catest.New(t), other: catest.New(t), obs: &countObserver{ocsp: map[string]int{}}}
	st, err := store.Open(context.Background(), "sqlite://"+filepath.Join(t.TempDir(), "registry.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if _, err := st.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.st = st
	f.clock.Store(time.Now().UnixNano())
	f.svc, err = New(f.pki.CA, st, Config{Interval: time.Hour, Validity: 24 * time.Hour, PageSize: 3, Observer: f.obs,
		Now: func() time.Time { return time.Unix(0, f.clock.Load()) }})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) advance(d time.Duration) { f.clock.Add(int64(d)) }
func (f *fixture) now() time.Time          { return time.Unix(0, f.clock.Load()) }

// enrol records a device certificate issued by p, as the MEF (p = ours) or
// a forwarding OBS (p = other) would, and returns it with its credential ID.
func (f *fixture) enrol(p *catest.PKI, id string, source string) (*x509.Certificate, string) {
	f.t.Helper()
	leaf := p.Leaf(f.t, ca.Request{Profile: ca.ProfileDevice, AssignedID: id, URIs: []*url.URL{{Scheme: "https", Host: "sp.example", Path: "/" + id}}}).Leaf
	sum := sha256.Sum256(leaf.Raw)
	serial := leaf.SerialNumber.Text(16)
	c := store.Credential{ID: "x509-" + id, AssignedID: id, DeviceID: "dev-" + id, Tenant: "t", Type: store.TypeX509, SUID: 12,
		Serial: &serial, CertSHA256: sum[:], CertDER: leaf.Raw, NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter,
		Status: store.StatusActive, Source: source, CreatedAt: time.Now()}
	if err := f.st.RegisterCredential(context.Background(), c); err != nil {
		f.t.Fatal(err)
	}
	return leaf, c.ID
}

func (f *fixture) revoke(id string, reason int) {
	f.t.Helper()
	if _, err := f.st.Revoke(context.Background(), store.Revocation{ID: id, Reason: reason, At: f.now(), Actor: "test", Tenant: "t"}); err != nil {
		f.t.Fatal(err)
	}
}

func serials(t *testing.T, crl *ca.CRL) map[string]int {
	t.Helper()
	parsed, err := x509.ParseRevocationList(crl.DER)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, e := range parsed.RevokedCertificateEntries {
		out[e.SerialNumber.Text(16)] = e.ReasonCode
	}
	return out
}

func TestCRLFollowsRevocations(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	var ours []*x509.Certificate
	var ids []string
	for _, id := range []string{"Sa", "Sb", "Sc", "Sd", "Se", "Sf", "Sg"} {
		leaf, cid := f.enrol(f.pki, id, store.SourceRSPF)
		ours, ids = append(ours, leaf), append(ids, cid)
	}
	_, fwd := f.enrol(f.other, "Sobs", store.SourceForward)
	f.revoke(fwd, crlreason.KeyCompromise) // the OBS sub-CA's to list, not ours

	first, err := f.svc.CRL(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := serials(t, first); len(got) != 0 {
		t.Fatalf("CRL before any revocation of ours lists %v", got)
	}
	again, _ := f.svc.CRL(ctx)
	if again != first || f.obs.crls.Load() != 1 {
		t.Errorf("a fresh CRL was regenerated (%d generations)", f.obs.crls.Load())
	}

	// Seven revocations over page size 3: three pages.
	reasons := []int{0, 1, 4, 5, 9, 4, 1}
	for i, id := range ids {
		f.advance(time.Millisecond)
		f.revoke(id, reasons[i])
	}
	f.svc.MarkStale()
	crl, err := f.svc.CRL(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := serials(t, crl)
	if len(got) != len(ours) {
		t.Fatalf("CRL lists %d serials, want %d: %v", len(got), len(ours), got)
	}
	for i, leaf := range ours {
		if r, ok := got[leaf.SerialNumber.Text(16)]; !ok || r != reasons[i] {
			t.Errorf("serial %s: listed %v with reason %d, want reason %d", leaf.SerialNumber.Text(16), ok, r, reasons[i])
		}
	}
	if crl.Number.Cmp(first.Number) <= 0 {
		t.Errorf("CRL number %v not above the previous %v", crl.Number, first.Number)
	}
}

func TestCRLStaleThroughRegistry(t *testing.T) {
	// A revocation on another replica: no MarkStale here, only the registry.
	f := newFixture(t)
	ctx := context.Background()
	leaf, id := f.enrol(f.pki, "Sa", store.SourceRSPF)
	first, err := f.svc.CRL(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f.advance(10 * time.Millisecond)
	f.revoke(id, crlreason.Superseded)
	// Within StaleCheck of the generation the current CRL is served...
	if c, _ := f.svc.CRL(ctx); c != first {
		t.Error("the staleness check ran more often than StaleCheck")
	}
	// ...after it, the watermark has moved and the CRL is rebuilt.
	f.advance(2 * time.Second)
	c, err := f.svc.CRL(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := serials(t, c)[leaf.SerialNumber.Text(16)]; !ok {
		t.Error("a revocation recorded by another replica did not reach the CRL")
	}
	// Past the interval, a CRL is regenerated even without revocations.
	n := f.obs.crls.Load()
	f.advance(time.Hour)
	if _, err := f.svc.CRL(ctx); err != nil || f.obs.crls.Load() != n+1 {
		t.Errorf("no regeneration after the interval (%d generations, %v)", f.obs.crls.Load()-n, err)
	}
}

// TestCRLStaleThroughLateRevocation: another replica's revocation is
// stamped before the last one this CRL saw (its transaction began earlier,
// or its clock is behind) and commits after the CRL was built. The latest
// revocation time does not move; the CRL must be rebuilt all the same.
func TestCRLStaleThroughLateRevocation(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	_, early := f.enrol(f.pki, "Sa", store.SourceRSPF)
	late, lateID := f.enrol(f.pki, "Sb", store.SourceRSPF)
	f.advance(10 * time.Millisecond)
	stampedEarlier := f.now()
	f.advance(10 * time.Millisecond)
	f.revoke(early, crlreason.KeyCompromise)
	if _, err := f.svc.CRL(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.Revoke(ctx, store.Revocation{ID: lateID, Reason: crlreason.KeyCompromise, At: stampedEarlier,
		Actor: "other replica", Tenant: "t"}); err != nil {
		t.Fatal(err)
	}
	f.advance(2 * time.Second)
	c, err := f.svc.CRL(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := serials(t, c)[late.SerialNumber.Text(16)]; !ok {
		t.Error("a revocation committed late with an earlier stamp never reached the CRL")
	}
}

func TestCRLServedWhileRegistryDown(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	first, err := f.svc.CRL(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f.st.Close()
	f.svc.MarkStale()
	f.advance(2 * time.Hour) // past the interval, before nextUpdate
	if c, err := f.svc.CRL(ctx); err != nil || c != first {
		t.Errorf("with the registry down the previous, still valid CRL is not served: %v", err)
	}
	f.advance(48 * time.Hour) // past nextUpdate: nothing valid to serve
	if _, err := f.svc.CRL(ctx); err == nil {
		t.Error("an expired CRL was served")
	}
}

func TestNewRefusesShortValidity(t *testing.T) {
	p := catest.New(t)
	if _, err := New(p.CA, nil, Config{Interval: time.Hour, Validity: time.Hour}); err == nil {
		t.Error("validity equal to the interval accepted")
	}
}

// serve runs a route handler on a request built by build.
func serve(t *testing.T, f *fixture, method, path string, build func(*fasthttp.Request)) *fasthttp.Response {
	t.Helper()
	var req fasthttp.Request
	req.Header.SetMethod(method)
	req.SetRequestURI(path)
	if build != nil {
		build(&req)
	}
	var ctx fasthttp.RequestCtx
	ctx.Init(&req, nil, nil)
	// The handlers Routes registers, without the router in front.
	routes := map[string]func(*fasthttp.RequestCtx) error{}
	for _, r := range f.svc.Routes() {
		routes[r.Method+" "+r.Pattern] = r.Handler
	}
	var h func(*fasthttp.RequestCtx) error
	switch {
	case strings.HasPrefix(path, ca.CRLPathPrefix):
		name := strings.TrimSuffix(strings.TrimPrefix(path, ca.CRLPathPrefix), ca.CRLPathSuffix)
		ctx.SetUserValue("issuer", name)
		h = routes[method+" "+ca.CRLPathPrefix+"{issuer}"+ca.CRLPathSuffix]
	case method == http.MethodGet:
		h = routes["GET "+ca.OCSPPath+"/{request:*}"]
	default:
		h = routes["POST "+ca.OCSPPath]
	}
	if err := h(&ctx); err != nil {
		// What the server would answer: only the status matters here.
		ctx.Response.Reset()
		ctx.SetStatusCode(statusOf(err))
	}
	var out fasthttp.Response
	ctx.Response.CopyTo(&out)
	return &out
}

func statusOf(err error) int { return apierr.As(err).Status }

func TestCRLHTTPCaching(t *testing.T) {
	f := newFixture(t)
	crlPath := ca.CRLPathPrefix + ca.IssuingCRLName + ca.CRLPathSuffix

	resp := serve(t, f, http.MethodGet, crlPath, nil)
	if resp.StatusCode() != 200 || string(resp.Header.ContentType()) != "application/pkix-crl" {
		t.Fatalf("GET CRL: %d %s", resp.StatusCode(), resp.Header.ContentType())
	}
	crl, err := x509.ParseRevocationList(resp.Body())
	if err != nil {
		t.Fatal(err)
	}
	etag := string(resp.Header.Peek("ETag"))
	lastMod := string(resp.Header.Peek("Last-Modified"))
	if etag != `"`+crl.Number.Text(16)+`"` {
		t.Errorf("ETag %s, want the CRL number %x", etag, crl.Number)
	}
	if lm, err := http.ParseTime(lastMod); err != nil || !lm.Equal(crl.ThisUpdate) {
		t.Errorf("Last-Modified %q, want thisUpdate %v", lastMod, crl.ThisUpdate)
	}
	if cc := string(resp.Header.Peek("Cache-Control")); cc != "public, max-age=3600" && cc != "public, max-age=3599" {
		t.Errorf("Cache-Control %q, want max-age up to the next regeneration (1h)", cc)
	}
	if exp, err := http.ParseTime(string(resp.Header.Peek("Expires"))); err != nil || exp.After(crl.NextUpdate) {
		t.Errorf("Expires %q after nextUpdate %v", resp.Header.Peek("Expires"), crl.NextUpdate)
	}

	tests := []struct {
		name   string
		header map[string]string
		want   int
	}{
		{"matching ETag", map[string]string{"If-None-Match": etag}, 304},
		{"ETag list", map[string]string{"If-None-Match": `"1", ` + etag}, 304},
		{"other ETag", map[string]string{"If-None-Match": `"1"`}, 200},
		{"other ETag beats a matching date", map[string]string{"If-None-Match": `"1"`, "If-Modified-Since": lastMod}, 200},
		{"not modified since", map[string]string{"If-Modified-Since": lastMod}, 304},
		{"modified since", map[string]string{"If-Modified-Since": crl.ThisUpdate.Add(-time.Second).Format(http.TimeFormat)}, 200},
	}
	for _, tt := range tests {
		resp := serve(t, f, http.MethodGet, crlPath, func(r *fasthttp.Request) {
			for k, v := range tt.header {
				r.Header.Set(k, v)
			}
		})
		if resp.StatusCode() != tt.want {
			t.Errorf("%s: status %d, want %d", tt.name, resp.StatusCode(), tt.want)
		}
		if tt.want == 304 && (len(resp.Body()) != 0 || string(resp.Header.Peek("ETag")) != etag) {
			t.Errorf("%s: 304 with a body or without the ETag", tt.name)
		}
	}
	if resp := serve(t, f, http.MethodGet, ca.CRLPathPrefix+"root"+ca.CRLPathSuffix, nil); resp.StatusCode() != 404 {
		t.Errorf("unknown issuer: %d, want 404", resp.StatusCode())
	}
}

func TestOCSPAnswers(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	leaf, id := f.enrol(f.pki, "Sa", store.SourceRSPF)
	fwdLeaf, _ := f.enrol(f.other, "Sobs", store.SourceForward)
	neverIssued := f.pki.Leaf(t, ca.Request{Profile: ca.ProfileDevice, AssignedID: "Sz", URIs: []*url.URL{{Scheme: "https", Host: "sp.example", Path: "/Sz"}}}).Leaf

	ask := func(cert, issuer *x509.Certificate) ([]byte, string) {
		der, err := ocsp.CreateRequest(cert, issuer, nil)
		if err != nil {
			t.Fatal(err)
		}
		return f.svc.Respond(ctx, der)
	}
	status := func(resp []byte, cert *x509.Certificate) *ocsp.Response {
		r, err := ocsp.ParseResponseForCert(resp, cert, f.pki.Issuing)
		if err != nil {
			t.Fatalf("parse response: %v", err)
		}
		return r
	}

	resp, label := ask(leaf, f.pki.Issuing)
	if r := status(resp, leaf); label != "good" || r.Status != ocsp.Good {
		t.Errorf("before revocation: %s / %d, want good", label, r.Status)
	}
	f.revoke(id, crlreason.KeyCompromise)
	resp, label = ask(leaf, f.pki.Issuing)
	if r := status(resp, leaf); label != "revoked" || r.Status != ocsp.Revoked || r.RevocationReason != ocsp.KeyCompromise ||
		!r.RevokedAt.Equal(f.now().UTC().Truncate(time.Second)) {
		t.Errorf("right after revocation: %s / %d reason %d at %v", label, r.Status, r.RevocationReason, r.RevokedAt)
	}
	// A serial our issuer name never issued, and a forwarded certificate
	// whose serial is claimed under our issuer: unknown.
	for _, c := range []*x509.Certificate{neverIssued, fwdLeaf} {
		forged := *c
		resp, label = ask(&forged, f.pki.Issuing)
		if r := status(resp, &forged); label != "unknown" || r.Status != ocsp.Unknown {
			t.Errorf("serial %x: %s / %d, want unknown", c.SerialNumber, label, r.Status)
		}
	}
	// Another issuer: not ours to answer.
	if resp, label = ask(fwdLeaf, f.other.Issuing); label != "unauthorized" || string(resp) != string(ocsp.UnauthorizedErrorResponse) {
		t.Errorf("other issuer: %s", label)
	}
	if resp, label = f.svc.Respond(ctx, []byte("garbage")); label != "malformed" || string(resp) != string(ocsp.MalformedRequestErrorResponse) {
		t.Errorf("garbage: %s", label)
	}
}

func TestOCSPOverHTTP(t *testing.T) {
	f := newFixture(t)
	leaf, _ := f.enrol(f.pki, "Sa", store.SourceRSPF)
	der, err := ocsp.CreateRequest(leaf, f.pki.Issuing, &ocsp.RequestOptions{Hash: 0})
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.StdEncoding.EncodeToString(der)
	tests := []struct {
		name, method, path string
		body               []byte
		ctype              string
		wantGood           bool
		wantStatus         int
	}{
		{"POST", http.MethodPost, ca.OCSPPath, der, "application/ocsp-request", true, 200},
		{"GET escaped", http.MethodGet, ca.OCSPPath + "/" + url.PathEscape(b64), nil, "", true, 200},
		{"GET url-safe alphabet", http.MethodGet, ca.OCSPPath + "/" + base64.RawURLEncoding.EncodeToString(der), nil, "", true, 200},
		{"GET not base64", http.MethodGet, ca.OCSPPath + "/%%%", nil, "", false, 200},
		{"GET empty", http.MethodGet, ca.OCSPPath + "/", nil, "", false, 200},
		{"POST garbage", http.MethodPost, ca.OCSPPath, []byte{0x30, 0x03, 1, 2, 3}, "application/ocsp-request", false, 200},
		{"POST wrong type", http.MethodPost, ca.OCSPPath, der, "application/json", false, 415},
		{"POST type in capitals, with a parameter", http.MethodPost, ca.OCSPPath, der, "Application/OCSP-Request; x=1", true, 200},
		{"POST type as a prefix only", http.MethodPost, ca.OCSPPath, der, "application/ocsp-requestx", false, 415},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := serve(t, f, tt.method, tt.path, func(r *fasthttp.Request) {
				r.SetBody(tt.body)
				if tt.ctype != "" {
					r.Header.SetContentType(tt.ctype)
				}
			})
			if resp.StatusCode() != tt.wantStatus {
				t.Fatalf("status %d, want %d", resp.StatusCode(), tt.wantStatus)
			}
			if tt.wantStatus != 200 {
				return
			}
			if ct := string(resp.Header.ContentType()); ct != "application/ocsp-response" {
				t.Errorf("Content-Type %s", ct)
			}
			r, err := ocsp.ParseResponseForCert(resp.Body(), leaf, f.pki.Issuing)
			if tt.wantGood && (err != nil || r.Status != ocsp.Good) {
				t.Errorf("want good, got %v %v", r, err)
			}
			if !tt.wantGood && string(resp.Body()) != string(ocsp.MalformedRequestErrorResponse) {
				t.Errorf("want malformedRequest, got %x", resp.Body())
			}
		})
	}
}

// TestCRLKeepsExpiredEntriesOneValidity: RFC 5280 §3.3 — an entry stays
// until it has appeared on one regularly scheduled CRL issued beyond the
// certificate's validity. Collecting at thisUpdate - Validity keeps it on
// every CRL for one Validity after notAfter, which covers failed or late
// generations and the other replicas' schedules.
func TestCRLKeepsExpiredEntriesOneValidity(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	leaf, id := f.enrol(f.pki, "Sa", store.SourceRSPF)
	f.revoke(id, crlreason.KeyCompromise)
	serial := leaf.SerialNumber.Text(16)
	tests := []struct {
		name   string
		at     time.Time
		listed bool
	}{
		{"before notAfter", f.now(), true},
		{"just after notAfter", leaf.NotAfter.Add(time.Second), true},
		{"within one validity after notAfter", leaf.NotAfter.Add(f.svc.cfg.Validity - time.Minute), true},
		{"past notAfter + validity", leaf.NotAfter.Add(f.svc.cfg.Validity + time.Second), false},
	}
	for _, tt := range tests {
		f.clock.Store(tt.at.UnixNano())
		crl, err := f.svc.Generate(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := serials(t, crl)[serial]; ok != tt.listed {
			t.Errorf("%s: serial listed %v, want %v", tt.name, ok, tt.listed)
		}
	}
}

// faultyRegistry wraps the real registry: it can fail every read, or block
// the first page read of a generation until released.
type faultyRegistry struct {
	Registry
	fail        atomic.Bool
	block       atomic.Bool
	blocked     chan struct{} // receives once a page read blocks
	release     chan struct{} // closing it lets blocked reads go on
	statusReads atomic.Int64
}

func newFaultyRegistry(r Registry) *faultyRegistry {
	return &faultyRegistry{Registry: r, blocked: make(chan struct{}, 1), release: make(chan struct{})}
}

func (r *faultyRegistry) RevokedCertificates(ctx context.Context, issuer string, at time.Time, after string, limit int) ([]store.RevokedCertificate, error) {
	if r.fail.Load() {
		return nil, store.ErrUnavailable
	}
	if r.block.Load() {
		select {
		case r.blocked <- struct{}{}:
		default:
		}
		<-r.release
	}
	return r.Registry.RevokedCertificates(ctx, issuer, at, after, limit)
}

func (r *faultyRegistry) RevocationWatermark(ctx context.Context, issuer string, since time.Time) (store.Watermark, error) {
	if r.fail.Load() {
		return store.Watermark{}, store.ErrUnavailable
	}
	return r.Registry.RevocationWatermark(ctx, issuer, since)
}

func (r *faultyRegistry) CertificateStatusBySerial(ctx context.Context, serial string) (store.CertificateStatus, error) {
	r.statusReads.Add(1)
	return r.Registry.CertificateStatusBySerial(ctx, serial)
}

func (f *fixture) wrap(t *testing.T) *faultyRegistry {
	t.Helper()
	reg := newFaultyRegistry(f.st)
	svc, err := New(f.pki.CA, reg, f.svc.cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.svc = svc
	return reg
}

// TestCRLFailureBacksOff: while regenerations fail and the current CRL is
// valid, fetches serve it and retry at most once per backoff (StaleCheck,
// doubling), not once each: N fetches during an outage are not N scans.
func TestCRLFailureBacksOff(t *testing.T) {
	f := newFixture(t)
	reg := f.wrap(t)
	ctx := context.Background()
	first, err := f.svc.CRL(ctx)
	if err != nil {
		t.Fatal(err)
	}
	reg.fail.Store(true)
	f.svc.MarkStale()
	f.advance(2 * time.Hour) // past the interval: every fetch wants a new CRL
	tests := []struct {
		name    string
		fetches int
		step    time.Duration
		want    int64 // generations attempted over the fetches
	}{
		{"first second: one attempt", 100, 5 * time.Millisecond, 1},
		{"after the first backoff (1s)", 100, 5 * time.Millisecond, 1},
		{"within the doubled backoff (2s)", 100, 10 * time.Millisecond, 0},
		{"after it", 100, 10 * time.Millisecond, 1},
	}
	for i, tt := range tests {
		if i == 1 {
			f.advance(time.Second)
		}
		n := f.obs.crls.Load()
		for range tt.fetches {
			if c, err := f.svc.CRL(ctx); err != nil || c != first {
				t.Fatalf("%s: the valid CRL is not served: %v", tt.name, err)
			}
			f.advance(tt.step)
		}
		if got := f.obs.crls.Load() - n; got != tt.want {
			t.Errorf("%s: %d generations over %d fetches, want %d", tt.name, got, tt.fetches, tt.want)
		}
	}
	reg.fail.Store(false)
	f.advance(4 * time.Second)
	if c, err := f.svc.CRL(ctx); err != nil || c == first {
		t.Errorf("no regeneration once the registry is back: %v", err)
	}
}

// TestCRLFetchDoesNotWaitForGeneration: a fetch during a slow generation
// (Run's, or another fetch's) returns the current, valid CRL at once.
func TestCRLFetchDoesNotWaitForGeneration(t *testing.T) {
	f := newFixture(t)
	reg := f.wrap(t)
	ctx := context.Background()
	first, err := f.svc.CRL(ctx)
	if err != nil {
		t.Fatal(err)
	}
	reg.block.Store(true)
	done := make(chan error, 1)
	go func() { _, err := f.svc.Generate(ctx); done <- err }()
	<-reg.blocked
	f.svc.MarkStale()
	f.advance(2 * time.Hour)
	got := make(chan *ca.CRL, 1)
	go func() { c, _ := f.svc.CRL(ctx); got <- c }()
	select {
	case c := <-got:
		if c != first {
			t.Error("a fetch during a generation got another CRL than the current one")
		}
	case <-time.After(10 * time.Second):
		t.Error("a fetch waited for a generation in flight although the current CRL is valid")
	}
	reg.block.Store(false)
	close(reg.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestRunSchedulesFromCurrentCRL: Run is due a margin before the current
// CRL's ThisUpdate + Interval, whoever built it, so it neither rebuilds
// right after a fetch did nor lets fetches find the CRL expired first.
func TestRunSchedulesFromCurrentCRL(t *testing.T) {
	f := newFixture(t)
	if d := f.svc.nextScheduled(); d != 0 {
		t.Errorf("without a CRL Run waits %v", d)
	}
	crl, err := f.svc.CRL(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := crl.ThisUpdate.Add(time.Hour - time.Minute).Sub(f.now())
	if d := f.svc.nextScheduled(); d != want || d <= 58*time.Minute {
		t.Errorf("Run due in %v, want %v (interval less a minute)", d, want)
	}
	f.advance(time.Hour)
	if d := f.svc.nextScheduled(); d > 0 {
		t.Errorf("Run not due past the interval: %v", d)
	}
}

// TestStaleCRLNotCacheable: a CRL served while its regeneration fails
// misses a revocation, so caches may not keep it.
func TestStaleCRLNotCacheable(t *testing.T) {
	f := newFixture(t)
	reg := f.wrap(t)
	crlPath := ca.CRLPathPrefix + ca.IssuingCRLName + ca.CRLPathSuffix
	if resp := serve(t, f, http.MethodGet, crlPath, nil); resp.StatusCode() != 200 {
		t.Fatal(resp.StatusCode())
	}
	reg.fail.Store(true)
	f.svc.MarkStale()
	resp := serve(t, f, http.MethodGet, crlPath, nil)
	if cc := string(resp.Header.Peek("Cache-Control")); resp.StatusCode() != 200 || cc != "public, max-age=0" {
		t.Errorf("stale CRL: %d, Cache-Control %q, want max-age=0", resp.StatusCode(), cc)
	}
}

// TestCRLNumbersAcrossReplicas: two replicas over one registry, the second
// with its clock an hour behind: each CRL still carries a higher number
// than every one before it, whoever signed it (RFC 5280 §5.2.3).
func TestCRLNumbersAcrossReplicas(t *testing.T) {
	storetest.Each(t, func(t *testing.T, url string) {
		ctx := context.Background()
		p := catest.New(t)
		st, err := store.Open(ctx, url, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(st.Close)
		if _, err := st.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		replica := func(skew time.Duration) *Service {
			svc, err := New(p.CA, st, Config{Now: func() time.Time { return time.Now().Add(skew) }})
			if err != nil {
				t.Fatal(err)
			}
			return svc
		}
		ahead, behind := replica(0), replica(-time.Hour)
		var last *big.Int
		for i, svc := range []*Service{ahead, behind, behind, ahead, behind} {
			crl, err := svc.Generate(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if last != nil && crl.Number.Cmp(last) <= 0 {
				t.Errorf("CRL %d: number %v not above the previous %v", i, crl.Number, last)
			}
			last = crl.Number
		}
	})
}

// TestOCSPImpossibleSerials: serials we never issue (more than 20 octets,
// zero, negative) are answered unauthorized without a registry read.
func TestOCSPImpossibleSerials(t *testing.T) {
	f := newFixture(t)
	reg := f.wrap(t)
	leaf, _ := f.enrol(f.pki, "Sa", store.SourceRSPF)
	tests := []struct {
		name   string
		serial *big.Int
		want   string
	}{
		{"21 octets", new(big.Int).Lsh(big.NewInt(1), 160), "unauthorized"},
		{"zero", big.NewInt(0), "unauthorized"},
		{"negative", big.NewInt(-5), "unauthorized"},
		{"20 octets", new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 160), big.NewInt(1)), "unknown"},
	}
	for _, tt := range tests {
		forged := *leaf
		forged.SerialNumber = tt.serial
		der, err := ocsp.CreateRequest(&forged, f.pki.Issuing, nil)
		if err != nil {
			t.Fatal(err)
		}
		n := reg.statusReads.Load()
		_, label := f.svc.Respond(context.Background(), der)
		reads := reg.statusReads.Load() - n
		if label != tt.want || (tt.want == "unauthorized") != (reads == 0) {
			t.Errorf("%s: %s after %d registry reads, want %s", tt.name, label, reads, tt.want)
		}
	}
}

// TestOCSPSignerCap: with every signature slot taken, OCSP answers tryLater
// within SignerWait instead of queueing on the HSM.
func TestOCSPSignerCap(t *testing.T) {
	f := newFixture(t)
	leaf, _ := f.enrol(f.pki, "Sa", store.SourceRSPF)
	der, err := ocsp.CreateRequest(leaf, f.pki.Issuing, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.svc.signers <- struct{}{} // the one slot (default Signers 1) busy
	if resp, label := f.svc.Respond(context.Background(), der); label != "try_later" || string(resp) != string(ocsp.TryLaterErrorResponse) {
		t.Errorf("all signers busy: %s", label)
	}
	<-f.svc.signers
	if _, label := f.svc.Respond(context.Background(), der); label != "good" {
		t.Errorf("signer free: %s", label)
	}
}

// TestStatusRateLimit: limits.status_source holds one source on the CRL
// and OCSP routes: 429 with Retry-After; OCSP's body is tryLater.
func TestStatusRateLimit(t *testing.T) {
	f := newFixture(t)
	limits, err := ratelimit.Config{StatusSource: ratelimit.Rate{PerSecond: 1, Burst: 2}}.Build(nil, f.now)
	if err != nil {
		t.Fatal(err)
	}
	f.svc.cfg.Limits = &limits
	routes := map[string]httpapi.Handler{}
	for _, r := range f.svc.Routes() {
		routes[r.Method+" "+r.Pattern] = r.Handler
	}
	call := func(method, pattern string) *fasthttp.Response {
		var ctx fasthttp.RequestCtx
		var req fasthttp.Request
		req.Header.SetMethod(method)
		req.SetRequestURI(ca.OCSPPath + "/MA==")
		ctx.Init(&req, &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1)}, nil)
		ctx.SetUserValue("issuer", ca.IssuingCRLName)
		if err := routes[method+" "+pattern](&ctx); err != nil {
			e := apierr.As(err)
			ctx.SetStatusCode(e.Status)
			ctx.Response.Header.Set("Retry-After", strconv.Itoa(e.RetryAfter))
		}
		var out fasthttp.Response
		ctx.Response.CopyTo(&out)
		return &out
	}
	crl := ca.CRLPathPrefix + "{issuer}" + ca.CRLPathSuffix
	ocspGET := ca.OCSPPath + "/{request:*}"
	tests := []struct {
		method, pattern string
		want            int
	}{
		{"GET", crl, 200}, {"GET", ocspGET, 200}, {"GET", crl, 429}, {"GET", ocspGET, 429}, {"HEAD", crl, 429},
	}
	for i, tt := range tests {
		resp := call(tt.method, tt.pattern)
		if resp.StatusCode() != tt.want {
			t.Errorf("request %d (%s %s): %d, want %d", i, tt.method, tt.pattern, resp.StatusCode(), tt.want)
		}
		if tt.want == 429 && string(resp.Header.Peek("Retry-After")) != "1" {
			t.Errorf("request %d: Retry-After %q", i, resp.Header.Peek("Retry-After"))
		}
		if tt.want == 429 && tt.pattern == ocspGET && string(resp.Body()) != string(ocsp.TryLaterErrorResponse) {
			t.Errorf("request %d: OCSP refusal is not tryLater: %x", i, resp.Body())
		}
	}
}
