package ca

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"encoding/json"
	"log/slog"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/credfactory/credfactory/client"
	"github.com/credfactory/credfactory/reqid"
)

// auditRecords parses the JSON lines an audit logger wrote.
func auditRecords(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(buf.Bytes()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// TestAuditRecordsEverySignature: a record before and after each
// certificate, CRL and OCSP signature, naming what was signed and the
// request; a failed signature is recorded as such; the enrolment token
// (the CSR's challengePassword) never appears.
func TestAuditRecordsEverySignature(t *testing.T) {
	p := newTestPKI(t)
	var buf bytes.Buffer
	audit := slog.New(slog.NewJSONHandler(&buf, nil))
	c := p.newCA(t, func(cfg *Config) { cfg.Audit = audit; cfg.Lint = true; cfg.Now = nil })
	const token = "enrolment-token-must-not-be-logged"
	csr, err := client.CSR(testKey(t, "p256-b"), "Sdevice1", token)
	if err != nil {
		t.Fatal(err)
	}
	req := Request{CSR: csr, Profile: ProfileDevice, AssignedID: "Sdevice1",
		URIs: []*url.URL{mustURL(t, "https://sp.example/Sdevice1")}}
	ctx := reqid.With(context.Background(), "req-42")
	issued, err := c.Issue(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if _, err := c.SignCRL(ctx, big.NewInt(7), now, now.Add(time.Hour), nil); err != nil {
		t.Fatal(err)
	}
	ocspReq, err := ParseOCSPRequest(requestWithNonce(t, issued.Certificate, p.inter, crypto.SHA256, nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SignOCSP(ctx, ocspReq, OCSPAnswer{Status: OCSPGood, ThisUpdate: now}); err != nil {
		t.Fatal(err)
	}
	bad := p.newCA(t, func(cfg *Config) { cfg.Audit = audit; cfg.Signer = badSigner{p.interKey} })
	if _, err := bad.Issue(ctx, deviceRequest(t, testKey(t, "p256-c"))); err == nil {
		t.Fatal("bad signer issued")
	}

	if strings.Contains(buf.String(), token) {
		t.Fatal("the audit trail holds the enrolment token")
	}
	recs := auditRecords(t, &buf)
	want := []struct{ msg, outcome string }{
		{"signing certificate", ""}, {"signed certificate", "ok"},
		{"signing CRL", ""}, {"signed CRL", "ok"},
		{"signing OCSP response", ""}, {"signed OCSP response", "ok"},
		{"signing certificate", ""}, {"signed certificate", "error"},
	}
	if len(recs) != len(want) {
		t.Fatalf("%d audit records, want %d:\n%s", len(recs), len(want), buf.String())
	}
	serial := issued.Certificate.SerialNumber.Text(16)
	for i, w := range want {
		r := recs[i]
		if r["msg"] != w.msg || (w.outcome != "" && r["outcome"] != w.outcome) || r["request_id"] != "req-42" {
			t.Errorf("record %d = %v, want %q outcome %q request req-42", i, r, w.msg, w.outcome)
		}
	}
	for _, i := range []int{0, 1, 4, 5} {
		if recs[i]["serial"] != serial {
			t.Errorf("record %d names serial %v, want %s", i, recs[i]["serial"], serial)
		}
	}
	if recs[0]["subject"] != "Sdevice1" || recs[0]["profile"] != string(ProfileDevice) || recs[2]["crl_number"] != "7" {
		t.Errorf("records lack subject, profile or CRL number: %v / %v", recs[0], recs[2])
	}
}
