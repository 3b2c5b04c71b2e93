package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fromSource is a client whose connections come from ip (any 127.x.y.z
// reaches the loopback listener), so one test can be several sources.
func (s *sp) fromSource(ip string, cert *tls.Certificate) *http.Client {
	c := s.client(cert)
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
	c.Transport.(*http.Transport).DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return d.DialContext(ctx, "tcp4", addr)
	}
	return c
}

// raw sends a request and returns the status, Retry-After and body as text.
func (s *sp) raw(c *http.Client, key, method, path, contentType, body string) (int, string, string) {
	s.t.Helper()
	status, hdr, b := s.send(c, key, method, path, contentType, []byte(body))
	return status, hdr.Get("Retry-After"), string(b)
}

// TestRateLimits: each limited route answers a burst over its limit with
// 429, Retry-After and its error style, and other sources, tenants, OBFs
// and accounts keep their own allowance (README "Rate limits"). Rates are one
// request per 1000 s, so nothing refills during the test and the
// Retry-After values are known.
func TestRateLimits(t *testing.T) {
	s := newSeed(t,
		"CREDFACTORY_LIMITS_ENROL_SOURCE_RATE=0.001", "CREDFACTORY_LIMITS_ENROL_SOURCE_BURST=3",
		"CREDFACTORY_LIMITS_ENROL_TENANT_RATE=0.001", "CREDFACTORY_LIMITS_ENROL_TENANT_BURST=1",
		"CREDFACTORY_LIMITS_ENROL_OBF_RATE=0.001", "CREDFACTORY_LIMITS_ENROL_OBF_BURST=3",
		"CREDFACTORY_LIMITS_TOKEN_TENANT_RATE=0.001", "CREDFACTORY_LIMITS_TOKEN_TENANT_BURST=2",
		"CREDFACTORY_LIMITS_LOGIN_SOURCE_RATE=0.001", "CREDFACTORY_LIMITS_LOGIN_SOURCE_BURST=3",
		"CREDFACTORY_LIMITS_LOGIN_ACCOUNT_RATE=0.001", "CREDFACTORY_LIMITS_LOGIN_ACCOUNT_BURST=2",
	)
	limited := func(what string, status int, retry string) {
		t.Helper()
		if status != http.StatusTooManyRequests {
			t.Fatalf("%s: status %d, want 429", what, status)
		}
		// 1000 s per request, the burst spent just now: 1000 s, or a
		// second less if a clock tick fell in between.
		if n, err := strconv.Atoi(retry); err != nil || n < 999 || n > 1000 {
			t.Fatalf("%s: Retry-After %q, want about 1000", what, retry)
		}
	}
	notLimited := func(what string, status int) {
		t.Helper()
		if status == http.StatusTooManyRequests {
			t.Fatalf("%s: 429, but this key has its own allowance", what)
		}
	}

	t.Run("enrol per source: EST in text, JSON in JSON, before the body is parsed", func(t *testing.T) {
		a, b := s.fromSource("127.0.0.2", nil), s.fromSource("127.0.0.3", nil)
		for i := range 3 {
			status, _, body := s.raw(a, "", "POST", "/.well-known/est/simpleenroll", "application/pkcs10", "not a CSR")
			if status != http.StatusBadRequest {
				t.Fatalf("request %d within the burst: %d %s", i, status, body)
			}
		}
		status, retry, body := s.raw(a, "", "POST", "/.well-known/est/simpleenroll", "application/pkcs10", "not a CSR")
		limited("EST simpleenroll", status, retry)
		if !strings.HasPrefix(body, "rate_limited: ") {
			t.Fatalf("EST refusal body %q: want the EST text style", body)
		}
		status, retry, _ = s.raw(a, "", "POST", "/.well-known/est/simplereenroll", "application/pkcs10", "not a CSR")
		limited("EST simplereenroll", status, retry)
		status, retry, body = s.raw(a, "", "POST", "/mef/v1/enrol", "application/json", "{}")
		limited("POST /mef/v1/enrol", status, retry)
		if !strings.Contains(body, `"code":"rate_limited"`) {
			t.Fatalf("JSON refusal body %s", body)
		}
		status, _, _ = s.raw(b, "", "POST", "/.well-known/est/simpleenroll", "application/pkcs10", "not a CSR")
		notLimited("another source", status)
	})

	// A second tenant with a device of its own.
	maker := s.stakeholder("maker2", "manufacturer")
	if status, body := s.call(maker, "POST", "/api/v1/devices", "text/csv", []byte("deviceId,claimCode\nm-1,m-label-1\n")); status != 200 {
		t.Fatalf("upload: %d %v", status, body)
	}
	token := func(key, device, claim string) (int, string, map[string]any) {
		t.Helper()
		c := s.client(nil)
		req, _ := http.NewRequest("POST", s.base+"/api/v1/devices/"+device+"/enrolments",
			strings.NewReader(string(mustJSON(map[string]any{"proof": map[string]any{"claimCode": claim}}))))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		b, _ := io.ReadAll(resp.Body)
		_ = json.Unmarshal(b, &out)
		return resp.StatusCode, resp.Header.Get("Retry-After"), out
	}
	var bundles []map[string]any
	t.Run("token issuance per tenant", func(t *testing.T) {
		for i := 1; i <= 2; i++ {
			status, _, body := token(s.alice, "dev-"+strconv.Itoa(i), "label-"+strconv.Itoa(i))
			if status != 201 {
				t.Fatalf("token %d within the burst: %d %v", i, status, body)
			}
			bundles = append(bundles, body)
		}
		status, retry, body := token(s.alice, "dev-3", "label-3")
		limited("third token", status, retry)
		if errCode(body) != "rate_limited" {
			t.Fatalf("refusal %v", body)
		}
		status, _, body = token(maker, "m-1", "m-label-1")
		if status != 201 {
			t.Fatalf("another tenant's token: %d %v", status, body)
		}
		bundles = append(bundles, body)
	})
	if len(bundles) != 3 {
		t.FailNow()
	}

	t.Run("enrol per tenant, before the HSM; a replay is free", func(t *testing.T) {
		// Each source has a burst of 3: the other tenant comes from another.
		enrolFrom := func(c *http.Client, b map[string]any) (int, string, string) {
			return s.raw(c, "", "POST", "/mef/v1/enrol", "application/json", string(mustJSON(map[string]any{
				"token": b["token"], "assignedId": b["assignedId"], "requestId": "r-" + b["assignedId"].(string),
				"key": map[string]any{"suid": 22, "targetIds": []string{"in-cse.example"}}})))
		}
		c := s.fromSource("127.0.0.4", nil)
		enrol := func(b map[string]any) (int, string, string) { return enrolFrom(c, b) }
		if status, _, body := enrol(bundles[0]); status != 201 {
			t.Fatalf("first enrolment: %d %s", status, body)
		}
		status, retry, body := enrol(bundles[1])
		limited("second enrolment of the tenant", status, retry)
		if !strings.Contains(body, `"code":"rate_limited"`) {
			t.Fatalf("refusal %s", body)
		}
		if status, _, body := enrol(bundles[0]); status != 201 || !strings.Contains(body, `"replayed":true`) {
			t.Fatalf("a replay must not be charged: %d %s", status, body)
		}
		if status, _, body := enrolFrom(s.fromSource("127.0.0.5", nil), bundles[2]); status != 201 {
			t.Fatalf("another tenant's enrolment: %d %s", status, body)
		}
	})

	t.Run("forward per OBF, a batch costing its items", func(t *testing.T) {
		batch := func(n int) string {
			items := make([]map[string]any, n)
			for i := range items {
				items[i] = map[string]any{"token": "nope", "assignedId": "Cnope"}
			}
			return string(mustJSON(map[string]any{"items": items}))
		}
		tool := s.fromSource("127.0.0.1", obfCert(t, s.tool, s.toolKey))
		if status, _, body := s.raw(tool, "", "POST", "/mef/v1/forward", "application/json", batch(3)); status != 200 {
			t.Fatalf("a batch within the burst: %d %s", status, body)
		}
		status, retry, body := s.raw(tool, "", "POST", "/mef/v1/forward", "application/json", batch(1))
		limited("forward over the OBF's limit", status, retry)
		if !strings.Contains(body, `"code":"rate_limited"`) {
			t.Fatalf("refusal %s", body)
		}
		line := s.fromSource("127.0.0.1", obfCert(t, s.lineT, s.lineTKey))
		if status, _, body := s.raw(line, "", "POST", "/mef/v1/forward", "application/json", batch(1)); status != 200 {
			t.Fatalf("another OBF: %d %s", status, body)
		}
	})

	t.Run("login per source and per account", func(t *testing.T) {
		login := func(c *http.Client, name string) (int, string, string) {
			return s.raw(c, "", "POST", "/login", "application/x-www-form-urlencoded",
				url.Values{"name": {name}, "password": {"wrong wrong wrong"}}.Encode())
		}
		src := s.fromSource("127.0.0.6", nil)
		for i := range 3 {
			if status, _, body := login(src, "nobody-"+strconv.Itoa(i)); status != http.StatusUnauthorized {
				t.Fatalf("login %d within the burst: %d %.200s", i, status, body)
			}
		}
		status, retry, body := login(src, "nobody-3")
		limited("fourth login from one source", status, retry)
		if !strings.Contains(body, "too many requests") {
			t.Fatalf("the login page must say why: %.500s", body)
		}
		status, _, _ = login(s.fromSource("127.0.0.7", nil), "nobody-3")
		notLimited("another source", status)

		for _, ip := range []string{"127.0.0.8", "127.0.0.9"} {
			if status, _, body := login(s.fromSource(ip, nil), "alice"); status != http.StatusUnauthorized {
				t.Fatalf("login as alice from %s: %d %.200s", ip, status, body)
			}
		}
		status, retry, _ = login(s.fromSource("127.0.0.10", nil), "alice")
		limited("third login as one account from fresh sources", status, retry)
		status, _, _ = login(s.fromSource("127.0.0.10", nil), "someone-else")
		notLimited("another account", status)
	})

	t.Run("metrics", func(t *testing.T) {
		text := s.metricsText()
		for _, want := range []string{
			`credfactory_rate_limited_total{limit="enrol_source"} 3`,
			`credfactory_rate_limited_total{limit="enrol_tenant"} 1`,
			`credfactory_rate_limited_total{limit="enrol_obf"} 1`,
			`credfactory_rate_limited_total{limit="token_tenant"} 1`,
			`credfactory_rate_limited_total{limit="login_source"} 1`,
			`credfactory_rate_limited_total{limit="login_account"} 1`,
			`credfactory_rate_limit_per_second{limit="login_account"} 0.001`,
			`credfactory_rate_limit_burst{limit="token_tenant"} 2`,
		} {
			if !strings.Contains(text, want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
	})
}

// obfCert is a registered OBF's TLS client certificate.
func obfCert(t *testing.T, reg map[string]any, key *ecdsa.PrivateKey) *tls.Certificate {
	certs := parsePEMCerts(t, reg["clientCert"].(string))
	c := &tls.Certificate{PrivateKey: key, Leaf: certs[0]}
	for _, x := range certs {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c
}
