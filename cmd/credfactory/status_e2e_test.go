package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/credfactory/credfactory/ca"
	"github.com/credfactory/credfactory/client"
)

// TestCRLAndOCSPWithOpenSSL (RFC 5280 CRLs, RFC 6960 OCSP; TS-0003 §8.1.2.2):
// a device enrolled over EST carries the CRL distribution point and the OCSP
// URL of the plain status listener; openssl finds it good there and in the
// CRL's eyes; the device's credential is revoked through the MAF API; at once
// openssl ocsp says revoked and openssl verify -crl_check refuses it with the
// fetched CRL.
func TestCRLAndOCSPWithOpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatal("openssl is not installed")
	}
	statusAddr := freePort(t)
	_, statusPort, _ := net.SplitHostPort(statusAddr)
	s := startSP(t, "CREDFACTORY_PORTAL_SP_DOMAIN=sp.example", "CREDFACTORY_CA_STATUS_LISTEN="+statusAddr)
	acme := s.stakeholder("acme", "manufacturer")
	alice := s.stakeholder("alice", "subscriber")
	if status, body := s.call(acme, "POST", "/api/v1/devices", "text/csv", []byte("deviceId,claimCode\ndev-1,label-1\n")); status != 200 {
		t.Fatalf("upload: %d %v", status, body)
	}
	if status, body := s.call(acme, "POST", "/api/v1/handovers", "application/json",
		mustJSON(map[string]any{"subscriber": "alice", "deviceIds": []string{"dev-1"}})); status != 200 {
		t.Fatalf("hand over: %d %v", status, body)
	}
	status, bundle := s.call(alice, "POST", "/api/v1/devices/dev-1/enrolments", "application/json",
		mustJSON(map[string]any{"proof": map[string]any{"claimCode": "label-1"}}))
	if status != 201 {
		t.Fatalf("bundle: %d %v", status, bundle)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, err := client.CSR(key, bundle["assignedId"].(string), bundle["token"].(string))
	if err != nil {
		t.Fatal(err)
	}
	anchorPath := filepath.Join(s.dir, "trust-anchor.pem")
	anchor := parsePEMCerts(t, readFile(t, anchorPath))
	conn := client.NewConn(s.base, anchor, nil)
	certs, err := conn.ESTEnroll(context.Background(), csr, false)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := conn.ESTChain(context.Background())
	if err != nil || len(chain) != 1 {
		t.Fatalf("/cacerts chain: %v %v", chain, err)
	}
	leaf, issuing := certs[0], chain[0]

	// The profile: CRL DP and AIA OCSP on the plain listener, under the
	// first host name (ca.status_url's default).
	base := "http://localhost:" + statusPort
	if len(leaf.CRLDistributionPoints) != 1 || leaf.CRLDistributionPoints[0] != base+"/ca/v1/crl/issuing.crl" ||
		len(leaf.OCSPServer) != 1 || leaf.OCSPServer[0] != base+"/ocsp" {
		t.Fatalf("certificate names CRL %v and OCSP %v, want %s/...", leaf.CRLDistributionPoints, leaf.OCSPServer, base)
	}

	dir := t.TempDir()
	file := func(name string) string { return filepath.Join(dir, name) }
	writePEM := func(name string, cs ...*x509.Certificate) {
		if err := os.WriteFile(file(name), ca.EncodeCertsPEM(cs), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writePEM("leaf.pem", leaf)
	writePEM("issuing.pem", issuing)
	writePEM("cas.pem", append(anchor, issuing)...)
	openssl := func(args ...string) (string, error) {
		out, err := exec.Command("openssl", args...).CombinedOutput()
		return string(out), err
	}
	ocspCheck := func(want string) string {
		t.Helper()
		out, err := openssl("ocsp", "-issuer", file("issuing.pem"), "-cert", file("leaf.pem"), "-url", leaf.OCSPServer[0],
			"-CAfile", anchorPath, "-timeout", "20")
		if err != nil || !strings.Contains(out, "Response verify OK") || !strings.Contains(out, file("leaf.pem")+": "+want) {
			t.Fatalf("openssl ocsp: want %s: %v\n%s", want, err, out)
		}
		// openssl sends a nonce and warns when the answer lacks it.
		if strings.Contains(out, "nonce") {
			t.Errorf("openssl ocsp complains about the nonce:\n%s", out)
		}
		return out
	}
	plain := &http.Client{Timeout: 30 * time.Second}
	fetchCRL := func() ([]byte, http.Header) {
		t.Helper()
		resp, err := plain.Get(leaf.CRLDistributionPoints[0])
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		der, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/pkix-crl" {
			t.Fatalf("GET CRL: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		if err := os.WriteFile(file("crl.der"), der, 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := openssl("crl", "-inform", "DER", "-in", file("crl.der"), "-out", file("crl.pem")); err != nil {
			t.Fatalf("openssl crl: %v\n%s", err, out)
		}
		return der, resp.Header
	}
	verifyWithCRL := func() (string, error) {
		return openssl("verify", "-crl_check", "-CAfile", anchorPath, "-untrusted", file("issuing.pem"),
			"-CRLfile", file("crl.pem"), file("leaf.pem"))
	}

	ocspCheck("good")
	_, hdr := fetchCRL()
	etag := hdr.Get("ETag")
	if out, err := openssl("crl", "-in", file("crl.pem"), "-CAfile", file("cas.pem"), "-noout"); err != nil || !strings.Contains(out, "verify OK") {
		t.Fatalf("openssl crl signature check: %v\n%s", err, out)
	}
	if out, err := verifyWithCRL(); err != nil || !strings.Contains(out, ": OK") {
		t.Fatalf("openssl verify -crl_check before revocation: %v\n%s", err, out)
	}

	// Revoked by the device itself through the MAF API (mTLS with the
	// certificate being revoked).
	status, detail := s.call(alice, "GET", "/api/v1/devices/dev-1", "", nil)
	creds, _ := detail["credentials"].([]any)
	if status != 200 || len(creds) != 1 {
		t.Fatalf("device detail: %d %v", status, detail)
	}
	credID := creds[0].(map[string]any)["credentialId"].(string)
	mtls := s.client(&tls.Certificate{Certificate: [][]byte{leaf.Raw, issuing.Raw}, PrivateKey: key})
	if status, body := s.callWith(mtls, "", "POST", "/maf/v1/credentials/"+credID+"/revoke", "application/json",
		[]byte(`{"reason":"keyCompromise"}`)); status != 200 {
		t.Fatalf("revoke: %d %v", status, body)
	}

	out := ocspCheck("revoked")
	if !strings.Contains(out, "Reason: keyCompromise") {
		t.Errorf("openssl ocsp shows no keyCompromise reason:\n%s", out)
	}
	_, hdr = fetchCRL()
	if hdr.Get("ETag") == etag {
		t.Errorf("the CRL was not regenerated after the revocation (ETag %s)", etag)
	}
	text, err := openssl("crl", "-in", file("crl.pem"), "-noout", "-text")
	if err != nil || !strings.Contains(strings.ToUpper(text), strings.ToUpper(leaf.SerialNumber.Text(16))) ||
		!strings.Contains(text, "Key Compromise") || !strings.Contains(text, "X509v3 CRL Number") ||
		!strings.Contains(text, "X509v3 Authority Key Identifier") {
		t.Errorf("openssl crl -text lacks the revoked serial %X, its reason, the CRL number or the AKI: %v\n%s", leaf.SerialNumber, err, text)
	}
	if out, err := verifyWithCRL(); err == nil || !strings.Contains(out, "certificate revoked") {
		t.Errorf("openssl verify -crl_check accepts a revoked certificate: %v\n%s", err, out)
	}

	// Conditional GET with the current ETag: 304.
	req, _ := http.NewRequest("GET", leaf.CRLDistributionPoints[0], nil)
	req.Header.Set("If-None-Match", hdr.Get("ETag"))
	if resp, err := plain.Do(req); err != nil || resp.StatusCode != http.StatusNotModified {
		t.Errorf("conditional GET: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	// The TLS listener serves the CRL too; the plain one serves nothing else.
	if resp, err := s.client(nil).Get(s.base + "/ca/v1/crl/issuing.crl"); err != nil || resp.StatusCode != 200 {
		t.Errorf("CRL over TLS: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	for _, path := range []string{"/healthz", "/metrics", "/api/v1/devices", "/ca/v1/crl/other.crl"} {
		resp, err := plain.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("plain listener serves %s: %d", path, resp.StatusCode)
		}
	}
	// The metrics saw it all.
	resp, err := http.Get(s.ops + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metricsText, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`credfactory_ocsp_responses_total{status="good"} 1`, `credfactory_ocsp_responses_total{status="revoked"} 1`,
		`credfactory_crl_generations_total{result="ok"}`, `credfactory_crl_entries 1`, `credfactory_crl_generation_duration_seconds_count`} {
		if !strings.Contains(string(metricsText), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
