package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/credfactory/credfactory/client"
)

// TestRenewalAndExpiry on the real binary: a device renews twice with EST
// simplereenroll (each time with its current certificate), a lost answer's
// retry gets the same certificate, a superseded certificate cannot renew;
// a shared key re-registered with a fresh token supersedes the old one at
// the MAF; and the background sweep marks an unused token and a lapsed key
// expired.
func TestRenewalAndExpiry(t *testing.T) {
	// Short token and key lifetimes so the sweep has something to do within
	// the test; certificates keep the default year, and renew at any age
	// (mef.renew_after off: the device renews back to back).
	s := newSeed(t, "CREDFACTORY_STORE_SWEEP_INTERVAL=300ms", "CREDFACTORY_PORTAL_TOKEN_TTL=20s",
		"CREDFACTORY_MEF_KEY_LIFETIME=20s", "CREDFACTORY_MEF_RENEW_AFTER=0s")
	ctx := t.Context()
	anchor := parsePEMCerts(t, readFile(t, filepath.Join(s.dir, "trust-anchor.pem")))
	b := s.bundle("dev-1", nil)
	newKey := func() crypto.Signer { k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader); return k }
	csr := func(key crypto.Signer, cn, token string) []byte {
		der, err := client.CSR(key, cn, token)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	as := func(certs []*x509.Certificate, key crypto.Signer) *client.Conn {
		c := &tls.Certificate{PrivateKey: key, Leaf: certs[0]}
		for _, x := range certs {
			c.Certificate = append(c.Certificate, x.Raw)
		}
		return client.NewConn(s.base, anchor, c)
	}

	key1 := newKey()
	cert1, err := client.NewConn(s.base, anchor, nil).ESTEnroll(ctx, csr(key1, "", b.Token), false)
	if err != nil {
		t.Fatal(err)
	}
	// First renewal: same key, authenticated by the certificate it replaces.
	renew1 := csr(key1, b.AssignedID, "")
	cert2, err := as(cert1, key1).ESTEnroll(ctx, renew1, true)
	if err != nil {
		t.Fatal(err)
	}
	if cert2[0].Subject.CommonName != b.AssignedID || cert2[0].SerialNumber.Cmp(cert1[0].SerialNumber) == 0 {
		t.Fatalf("first renewal: %s serial %x", cert2[0].Subject.CommonName, cert2[0].SerialNumber)
	}
	// The answer was lost; the device retries with what it had.
	retry, err := as(cert1, key1).ESTEnroll(ctx, renew1, true)
	if err != nil || !retry[0].Equal(cert2[0]) {
		t.Fatalf("retried renewal: %v (same certificate: %v)", err, err == nil && retry[0].Equal(cert2[0]))
	}
	// Second renewal, with a new key, from the current certificate.
	key3 := newKey()
	cert3, err := as(cert2, key1).ESTEnroll(ctx, csr(key3, "", ""), true)
	if err != nil {
		t.Fatal(err)
	}
	// The answer holds only the certificate (RFC 7030 §4.2.3); its chain
	// is /cacerts'.
	chain, err := client.NewConn(s.base, anchor, nil).ESTChain(ctx)
	if err != nil || len(cert3) != 1 {
		t.Fatalf("renewal answered %d certificates; chain %v", len(cert3), err)
	}
	opensslVerify(t, filepath.Join(s.dir, "trust-anchor.pem"), append(cert3, chain...))
	// A superseded certificate renews no more.
	var e *client.Error
	if _, err := as(cert1, key1).ESTEnroll(ctx, csr(newKey(), "", ""), true); !errors.As(err, &e) || e.Status != 403 || e.Code != "certificate_superseded" {
		t.Fatalf("renewal with a superseded certificate: %v", err)
	}
	if _, err := as(cert3, key3).ESTEnroll(ctx, csr(newKey(), "Sanother", ""), true); !errors.As(err, &e) || e.Status != 400 || e.Code != "csr_subject_mismatch" {
		t.Fatalf("renewal for another assigned ID: %v", err)
	}
	status, detail := s.call(s.alice, "GET", "/api/v1/devices/dev-1", "", nil)
	states := map[string]int{}
	for _, c := range detail["credentials"].([]any) {
		states[c.(map[string]any)["status"].(string)]++
	}
	if status != 200 || states["active"] != 1 || states["revoked"] != 2 {
		t.Fatalf("dev-1's history: %d %v (want 1 active, 2 superseded)", status, states)
	}

	// Shared keys renew by re-registration: a fresh token for the same
	// assigned ID and SUID; the Target (dev-1) fetches only the new key.
	target := as(cert3, key3)
	enrolKey := func() client.KeyAnswer {
		t.Helper()
		b2 := s.bundle("dev-2", nil)
		k, err := client.NewConn(s.base, anchor, nil).EnrolKey(ctx, b2.Token, b2.AssignedID, base64.RawURLEncoding.EncodeToString(newKeyBytes()), 22, []string{b.AssignedID})
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	fetch := func(keID string) (int, string) {
		t.Helper()
		var got struct {
			Credential string `json:"credential"`
		}
		err := target.JSON(ctx, "GET", "/maf/v1/fetchCredentials/"+keID+"/22", nil, nil, &got)
		if errors.As(err, &e) {
			return e.Status, e.Code
		}
		if err != nil {
			t.Fatal(err)
		}
		return 200, got.Credential
	}
	old, renewed := enrolKey(), enrolKey()
	if old.EnroleeID != renewed.EnroleeID || old.KeID == renewed.KeID {
		t.Fatalf("re-registration: %+v then %+v", old, renewed)
	}
	if status, code := fetch(old.KeID); status != 410 || code != "credential_revoked" {
		t.Fatalf("fetching the superseded key: %d %s", status, code)
	}
	if status, key := fetch(renewed.KeID); status != 200 || key != base64.StdEncoding.EncodeToString(renewed.Key) {
		t.Fatalf("fetching the new key: %d", status)
	}

	// An unused token and the key outlive their 20 s: the sweep marks them.
	s.bundle("dev-3", nil)
	for deadline := time.Now().Add(60 * time.Second); ; {
		m := scrape(t, s)
		if strings.Contains(m, `credfactory_sweep_rows_total{kind="token"} 1`) &&
			strings.Contains(m, `credfactory_sweep_rows_total{kind="credential"} 1`) &&
			strings.Contains(m, "credfactory_sweep_lease_held 1") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sweep did not mark the token and key expired:\n%s", grepLines(m, "credfactory_sweep"))
		}
		time.Sleep(500 * time.Millisecond)
	}
	if status, code := fetch(renewed.KeID); status != 410 || code != "credential_expired" {
		t.Fatalf("fetching the expired key: %d %s", status, code)
	}
	_, detail = s.call(s.alice, "GET", "/api/v1/devices/dev-2", "", nil)
	states = map[string]int{}
	for _, c := range detail["credentials"].([]any) {
		states[c.(map[string]any)["status"].(string)]++
	}
	if states["expired"] != 1 || states["revoked"] != 1 || detail["state"] != "enrolled" {
		t.Fatalf("dev-2 after the sweep: state %v, credentials %v", detail["state"], states)
	}
	if !strings.Contains(s.logs.String(), `"msg":"expiry sweep"`) {
		t.Fatalf("no summary line for the sweep in the log")
	}
}

func newKeyBytes() []byte {
	b := make([]byte, 18)
	rand.Read(b)
	return b
}

func scrape(t *testing.T, s *seed) string {
	t.Helper()
	resp, err := http.Get(s.ops + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return string(raw)
}

func grepLines(text, prefix string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
