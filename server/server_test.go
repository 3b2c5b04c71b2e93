package server_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credfactory/credfactory/apierr"
	"github.com/credfactory/credfactory/metrics"
	"github.com/credfactory/credfactory/server"
	dto "github.com/prometheus/client_model/go"
	"github.com/valyala/fasthttp"
)

// selfSigned is a software TLS identity: this package tests the front end,
// the HSM-held key is exercised by the serve end-to-end test.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}, pool
}

func start(t *testing.T, opts server.Options, routes func(s *server.Server)) (*server.Server, *http.Client, string) {
	t.Helper()
	cert, pool := selfSigned(t)
	opts.Listen = "127.0.0.1:0"
	opts.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if opts.MaxBodyBytes == 0 {
		opts.MaxBodyBytes = 1024
	}
	if opts.ReadTimeout == 0 {
		opts.ReadTimeout = 5 * time.Second
	}
	opts.WriteTimeout = 5 * time.Second
	s := server.New(opts)
	if routes != nil {
		routes(s)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	return s, client, "https://" + s.Addr().String()
}

type errBody struct {
	Error struct{ Code, Message string } `json:"error"`
}

func TestRoutesAndErrors(t *testing.T) {
	srv, client, base := start(t, server.Options{OpsListen: "127.0.0.1:0", Checks: map[string]server.Check{
		"ok": func(context.Context) error { return nil },
	}}, func(s *server.Server) {
		s.Handle(fasthttp.MethodPost, "/echo/{id}", func(ctx *fasthttp.RequestCtx) error {
			ctx.SetBody(ctx.PostBody())
			return nil
		})
		s.Handle(fasthttp.MethodGet, "/conflict", func(*fasthttp.RequestCtx) error {
			return apierr.New(http.StatusConflict, "token_redeemed", "the token was used already")
		})
		s.Handle(fasthttp.MethodGet, "/broken", func(*fasthttp.RequestCtx) error {
			return errors.New("database password is hunter2")
		})
		s.HandleStream(fasthttp.MethodPost, "/stream", 100, func(ctx *fasthttp.RequestCtx) error {
			_, err := io.Copy(io.Discard, ctx.RequestBodyStream())
			return err
		})
		s.Handle(fasthttp.MethodGet, "/busy", func(*fasthttp.RequestCtx) error {
			return &apierr.Error{Status: http.StatusServiceUnavailable, Code: "hsm_unavailable", Message: "try later", RetryAfter: 3}
		})
	})
	tests := []struct {
		name, method, path string
		body               []byte
		status             int
		code               string
		header             [2]string
	}{
		{"healthz", "GET", "/healthz", nil, 200, "", [2]string{}},
		{"readyz", "GET", "/readyz", nil, 200, "", [2]string{}},
		{"echo", "POST", "/echo/1", []byte("hello"), 200, "", [2]string{}},
		{"unknown path", "GET", "/nope", nil, 404, "not_found", [2]string{}},
		{"wrong method", "DELETE", "/healthz", nil, 405, "method_not_allowed", [2]string{}},
		{"body over the limit", "POST", "/echo/1", bytes.Repeat([]byte("x"), 4096), 413, "body_too_large", [2]string{}},
		{"typed error", "GET", "/conflict", nil, 409, "token_redeemed", [2]string{}},
		{"streamed body within its limit", "POST", "/stream", bytes.Repeat([]byte("x"), 100), 200, "", [2]string{}},
		{"streamed body over its limit", "POST", "/stream", bytes.Repeat([]byte("x"), 101), 413, "body_too_large", [2]string{}},
		{"internal error hides its cause", "GET", "/broken", nil, 500, "internal", [2]string{}},
		{"retry after", "GET", "/busy", nil, 503, "hsm_unavailable", [2]string{"Retry-After", "3"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, base+tc.path, bytes.NewReader(tc.body))
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if tc.header[0] != "" && resp.Header.Get(tc.header[0]) != tc.header[1] {
				t.Fatalf("%s = %q, want %q", tc.header[0], resp.Header.Get(tc.header[0]), tc.header[1])
			}
			if tc.code == "" {
				return
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Fatalf("content type %q", ct)
			}
			var e errBody
			if err := json.Unmarshal(body, &e); err != nil {
				t.Fatalf("error body is not JSON: %s", body)
			}
			if e.Error.Code != tc.code || e.Error.Message == "" {
				t.Fatalf("error %+v, want code %s", e.Error, tc.code)
			}
			if strings.Contains(string(body), "hunter2") {
				t.Fatal("internal cause leaked to the client")
			}
		})
	}

	// /metrics is on the operations listener only: on the TLS port it
	// is just another unknown path.
	resp, err := client.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("/metrics on the TLS listener: %d, want 404", resp.StatusCode)
	}
	resp, err = http.Get("http://" + srv.OpsAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`credfactory_http_requests_total{code="409",route="/conflict"} 1`,
		`credfactory_http_rejected_total{reason="body_too_large"} 2`,
		`credfactory_http_rejected_total{reason="not_found"} 2`,
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func TestReadyzReportsFailingCheck(t *testing.T) {
	var calls atomic.Int32
	reg := metrics.New()
	_, client, base := start(t, server.Options{Metrics: reg, Checks: map[string]server.Check{
		"hsm":   func(context.Context) error { calls.Add(1); return errors.New("token /usr/lib/x.so unavailable") },
		"store": func(context.Context) error { return nil },
	}}, nil)
	resp, err := client.Get(base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Status string
		Checks map[string]string
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 503 || body.Status != "unready" || body.Checks["store"] != "ok" || body.Checks["hsm"] != "unavailable" {
		t.Fatalf("readyz: %d %+v", resp.StatusCode, body)
	}
	// A burst of probes runs the checks once.
	for i := 0; i < 20; i++ {
		r, err := client.Get(base + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
	}
	if n := calls.Load(); n > 2 {
		t.Fatalf("21 probes ran the check %d times", n)
	}
	// The same verdict reaches Prometheus, for alerts that outlive a probe.
	for check, want := range map[string]float64{"hsm": 0, "store": 1} {
		var m dto.Metric
		if err := reg.Ready.WithLabelValues(check).Write(&m); err != nil {
			t.Fatal(err)
		}
		if got := m.GetGauge().GetValue(); got != want {
			t.Errorf("credfactory_ready{check=%q} = %v, want %v", check, got, want)
		}
	}
}

func TestAccessLogNamesTheRouteNotThePath(t *testing.T) {
	var buf syncBuffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	_, client, base := start(t, server.Options{Logger: log, AccessLog: true}, func(s *server.Server) {
		s.Handle(fasthttp.MethodGet, "/things/{id}", func(ctx *fasthttp.RequestCtx) error {
			return apierr.New(http.StatusNotFound, "not_found", "no such thing")
		})
	})
	req, _ := http.NewRequest("GET", base+"/things/secret-device?token=s3cr3t", nil)
	req.Header.Set("X-Request-ID", "req-42")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var line struct {
		Msg, RequestID, Method, Route, Peer string
		Status                              int
	}
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "request" {
			line.Method, _ = m["method"].(string)
			line.Route, _ = m["route"].(string)
			line.RequestID, _ = m["request_id"].(string)
			line.Peer, _ = m["peer"].(string)
			if f, ok := m["status"].(float64); ok {
				line.Status = int(f)
			}
		}
	}
	if line.Route != "/things/{id}" || line.Method != "GET" || line.Status != 404 || line.RequestID != "req-42" || line.Peer != "127.0.0.1" {
		t.Fatalf("access line %+v in %s", line, buf.String())
	}
	if strings.Contains(buf.String(), "s3cr3t") || strings.Contains(buf.String(), "secret-device") {
		t.Fatalf("the access log holds the path or query: %s", buf.String())
	}
}

// syncBuffer is a bytes.Buffer the server's goroutines may write to while
// the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestShutdownLetsInFlightRequestsFinish(t *testing.T) {
	entered := make(chan struct{})
	s, client, base := start(t, server.Options{}, func(s *server.Server) {
		s.Handle(fasthttp.MethodGet, "/slow", func(ctx *fasthttp.RequestCtx) error {
			close(entered)
			time.Sleep(300 * time.Millisecond)
			ctx.SetBodyString("done")
			return nil
		})
	})
	type result struct {
		body string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := client.Get(base + "/slow")
		if err != nil {
			got <- result{err: err}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- result{body: string(b)}
	}()
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-got
	if r.err != nil || r.body != "done" {
		t.Fatalf("in-flight request: %q, %v", r.body, r.err)
	}
	if _, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "https://"), time.Second); err == nil {
		t.Fatal("server still accepts connections after shutdown")
	}
}

// failingListener fails Accept with an error that is not net.ErrClosed.
type failingListener struct{ net.Listener }

func (failingListener) Accept() (net.Conn, error) { return nil, errors.New("accept: broken") }

// TestStatusListenerFailureReported: a status listener that fails is
// reported by Serve at once, not when the TLS server stops some day.
func TestStatusListenerFailureReported(t *testing.T) {
	cert, _ := selfSigned(t)
	s := server.New(server.Options{Listen: "127.0.0.1:0", StatusListen: "127.0.0.1:0",
		TLS: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}})
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	server.SetStatusListener(s, failingListener{ln})
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "status listener") {
			t.Errorf("Serve returned %v, want the status listener's failure", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("a failed status listener went unreported while the TLS server runs")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
		<-done
	}
}
