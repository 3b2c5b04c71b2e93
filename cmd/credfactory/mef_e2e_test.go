package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/credfactory/credfactory/ca"
	"github.com/credfactory/credfactory/client"
)

// seed is the four seed cases' common setting: an SP with a manufacturer,
// a subscriber owning six devices, and four OBFs.
type seed struct {
	*sp
	alice                     string // the subscriber's API key
	phone, lineU, tool, lineT map[string]any
	toolKey, lineTKey         *ecdsa.PrivateKey
}

func newSeed(t *testing.T, env ...string) *seed {
	s := &seed{sp: startSP(t, append([]string{"CREDFACTORY_PORTAL_SP_DOMAIN=sp.example"}, env...)...)}
	admin := s.stakeholder("admin", "sp-admin")
	acme := s.stakeholder("acme", "manufacturer")
	s.alice = s.stakeholder("alice", "subscriber")
	var csv strings.Builder
	csv.WriteString("deviceId,claimCode\n")
	ids := []string{}
	for i := 1; i <= 6; i++ {
		fmt.Fprintf(&csv, "dev-%d,label-%d\n", i, i)
		ids = append(ids, fmt.Sprintf("dev-%d", i))
	}
	if status, body := s.call(acme, "POST", "/api/v1/devices", "text/csv", []byte(csv.String())); status != 200 || body["accepted"] != float64(6) {
		t.Fatalf("upload: %d %v", status, body)
	}
	if status, body := s.call(acme, "POST", "/api/v1/handovers", "application/json", mustJSON(map[string]any{"subscriber": "alice", "deviceIds": ids})); status != 200 {
		t.Fatalf("hand over: %d %v", status, body)
	}
	register := func(req map[string]any) map[string]any {
		req["owner"] = "alice"
		status, body := s.call(admin, "POST", "/api/v1/obfs", "application/json", mustJSON(req))
		if status != 201 {
			t.Fatalf("register OBF %v: %d %v", req["name"], status, body)
		}
		return body
	}
	s.toolKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s.lineTKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s.phone = register(map[string]any{"name": "phone", "kind": "obd"})
	s.lineU = register(map[string]any{"name": "line-u", "kind": "obs"})
	s.tool = register(map[string]any{"name": "tool", "kind": "obd", "trusted": true, "clientCsr": csrPEM(t, s.toolKey)})
	s.lineT = register(map[string]any{"name": "line-t", "kind": "obs", "trusted": true, "clientCsr": csrPEM(t, s.lineTKey)})
	return s
}

// bundle proves control of a device with its label and gets a bundle for obf
// (nil: the stakeholder's own untrusted OBD).
func (s *seed) bundle(device string, obf map[string]any) client.Bundle {
	s.t.Helper()
	req := map[string]any{"proof": map[string]any{"claimCode": "label-" + strings.TrimPrefix(device, "dev-")}}
	if obf != nil {
		req["obfId"] = obf["obfId"]
	}
	status, body := s.call(s.alice, "POST", "/api/v1/devices/"+device+"/enrolments", "application/json", mustJSON(req))
	if status != 201 {
		s.t.Fatalf("enrolment bundle for %s: %d %v", device, status, body)
	}
	var b client.Bundle
	if err := json.Unmarshal(mustJSON(body), &b); err != nil {
		s.t.Fatal(err)
	}
	return b
}

func (s *seed) writeBundle(b client.Bundle) string {
	path := filepath.Join(s.t.TempDir(), "bundle.json")
	if err := os.WriteFile(path, mustJSON(b), 0o600); err != nil {
		s.t.Fatal(err)
	}
	return path
}

// obfConn is a trusted OBF's connection: its client certificate, trusting
// the SP's root.
func (s *seed) obfConn(reg map[string]any, key *ecdsa.PrivateKey) *client.Conn {
	s.t.Helper()
	certs := parsePEMCerts(s.t, reg["clientCert"].(string))
	c := tls.Certificate{PrivateKey: key, Leaf: certs[0]}
	for _, x := range certs {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	anchor := parsePEMCerts(s.t, readFile(s.t, filepath.Join(s.dir, "trust-anchor.pem")))
	return client.NewConn(s.base, anchor, &c)
}

func parsePEMCerts(t *testing.T, text string) []*x509.Certificate {
	t.Helper()
	certs, err := ca.ParseCertsPEM([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return certs
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func opensslVerify(t *testing.T, anchor string, chain []*x509.Certificate) {
	t.Helper()
	dir := t.TempDir()
	var untrusted strings.Builder
	for _, c := range chain[1:] {
		untrusted.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
	}
	if err := os.WriteFile(filepath.Join(dir, "leaf.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: chain[0].Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "chain.pem"), []byte(untrusted.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"verify", "-CAfile", anchor, "-purpose", "sslclient"}
	if untrusted.Len() > 0 {
		args = append(args, "-untrusted", filepath.Join(dir, "chain.pem"))
	}
	out, err := exec.Command("openssl", append(args, filepath.Join(dir, "leaf.pem"))...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), ": OK") {
		t.Fatalf("openssl verify: %v\n%s", err, out)
	}
}

// TestSeedCases runs the four seed cases end to end: portal enrolment →
// bundle → OBF → Enrollee or OBS → MEF → MAF.
func TestSeedCases(t *testing.T) {
	s := newSeed(t)
	ctx := context.Background()
	anchorPath := filepath.Join(s.dir, "trust-anchor.pem")

	// 1. Untrusted OBD: the stakeholder's phone hands the bundle to the
	// device, which enrols over EST with credfactory enroll.
	b1 := s.bundle("dev-1", nil)
	if b1.MEFURI == "" || b1.TrustAnchor == "" {
		t.Fatalf("untrusted bundle without MEF URI or trust anchor: %+v", b1)
	}
	out1 := filepath.Join(t.TempDir(), "dev-1")
	s.cli("enroll", "--bundle", s.writeBundle(b1), "--out", out1)
	for _, f := range []string{"key.pem", "cert.pem", "chain.pem"} {
		if st, err := os.Stat(filepath.Join(out1, f)); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, st, err)
		}
	}
	leaf := parsePEMCerts(t, readFile(t, filepath.Join(out1, "cert.pem")))[0]
	chain := parsePEMCerts(t, readFile(t, filepath.Join(out1, "chain.pem")))
	opensslVerify(t, anchorPath, append([]*x509.Certificate{leaf}, chain...))
	if leaf.Subject.CommonName != b1.AssignedID || len(leaf.URIs) != 1 || leaf.URIs[0].String() != "https://sp.example/"+b1.AssignedID {
		t.Fatalf("certificate names %q %v, want the assigned ID %s", leaf.Subject.CommonName, leaf.URIs, b1.AssignedID)
	}
	// The Enrollee lost the answer and runs again: same certificate.
	s.cli("enroll", "--bundle", s.writeBundle(b1), "--out", out1)
	if again := parsePEMCerts(t, readFile(t, filepath.Join(out1, "cert.pem")))[0]; !again.Equal(leaf) {
		t.Fatal("a retry with the same token and key got a second certificate")
	}
	// Anyone else with the token: refused.
	if out, err := exec.Command(bin, "enroll", "--bundle", s.writeBundle(b1), "--out", t.TempDir()).CombinedOutput(); err == nil || !strings.Contains(string(out), "token_redeemed") {
		t.Fatalf("token reused with another key: %v\n%s", err, out)
	}
	// The MAF holds it: the device asks for its own credential's status.
	devKeyPEM, _ := pem.Decode([]byte(readFile(t, filepath.Join(out1, "key.pem"))))
	devKey, _ := x509.ParsePKCS8PrivateKey(devKeyPEM.Bytes)
	devTLS := &tls.Certificate{Certificate: [][]byte{leaf.Raw, chain[0].Raw}, PrivateKey: devKey, Leaf: leaf}
	status, list := s.callWith(s.client(devTLS), "", "GET", "/maf/v1/credentials?assignedId="+url.QueryEscape(b1.AssignedID), "", nil)
	if status != 200 || len(list["credentials"].([]any)) != 1 {
		t.Fatalf("MAF record of case 1: %d %v", status, list)
	}

	// 2. Untrusted OBS: the line forwards the bundle; the device asks for a
	// shared key (Kpsa) that device 1 (its Target) may fetch from the MAF.
	b2 := s.bundle("dev-2", s.lineU)
	out2 := filepath.Join(t.TempDir(), "dev-2")
	s.cli("enroll", "--bundle", s.writeBundle(b2), "--out", out2, "--psk", "--suid", "22", "--target", b1.AssignedID)
	var psk client.KeyAnswer
	if err := json.Unmarshal([]byte(readFile(t, filepath.Join(out2, "psk.json"))), &psk); err != nil {
		t.Fatal(err)
	}
	if len(psk.Key) != 32 || !strings.HasPrefix(psk.CredentialID, "12-") || !strings.HasSuffix(psk.KeyID, "@sp.example") || psk.EnroleeID != b2.AssignedID {
		t.Fatalf("shared key answer: %+v", psk)
	}
	s.cli("enroll", "--bundle", s.writeBundle(b2), "--out", out2, "--psk", "--suid", "22", "--target", b1.AssignedID)
	var psk2 client.KeyAnswer
	if err := json.Unmarshal([]byte(readFile(t, filepath.Join(out2, "psk.json"))), &psk2); err != nil {
		t.Fatal(err)
	}
	if string(psk2.Key) != string(psk.Key) || !psk2.Replayed {
		t.Fatal("a retry of the key request got another key")
	}
	status, fetched := s.callWith(s.client(devTLS), "", "GET", "/maf/v1/fetchCredentials/"+psk.KeID+"/22", "", nil)
	if status != 200 || fetched["credential"] != base64.StdEncoding.EncodeToString(psk.Key) || fetched["enroleeId"] != b2.AssignedID {
		t.Fatalf("Target fetches the key: %d %v", status, fetched)
	}

	// 3. Trusted OBD: the technician's tool provisions a shared key itself
	// and forwards it; the SP names it and seals it with the KEK.
	b3 := s.bundle("dev-3", s.tool)
	if b3.MEFURI != "" || b3.TrustAnchor != "" {
		t.Fatalf("a trusted OBF's bundle carries MEF and trust anchor: %+v", b3)
	}
	tool := s.obfConn(s.tool, s.toolKey)
	value := make([]byte, 32)
	rand.Read(value)
	item := client.ForwardItem{Token: b3.Token, AssignedID: b3.AssignedID}
	item.Key = &client.ForwardKey{SUID: 22, TargetIDs: []string{b1.AssignedID}, Value: value, NotAfter: time.Now().Add(24 * time.Hour)}
	res, err := tool.Forward(ctx, []client.ForwardItem{item})
	if err != nil || len(res) != 1 || res[0].Status != "recorded" || !strings.HasSuffix(res[0].KeID, "@sp.example") ||
		!strings.HasSuffix(res[0].KeyID, "@sp.example") || res[0].CredentialID != "12-"+res[0].KeyID {
		t.Fatalf("forward key: %v %+v", err, res)
	}
	keID := res[0].KeID
	if again, err := tool.Forward(ctx, []client.ForwardItem{item}); err != nil || again[0].Status != "replayed" || again[0].KeID != keID || again[0].KeyID != res[0].KeyID {
		t.Fatalf("resent key: %v %+v", err, again)
	}
	status, fetched = s.callWith(s.client(devTLS), "", "GET", "/maf/v1/fetchCredentials/"+keID+"/22", "", nil)
	if status != 200 || fetched["credential"] != base64.StdEncoding.EncodeToString(value) {
		t.Fatalf("Target fetches the forwarded key: %d %v", status, fetched)
	}

	// 4. Trusted OBS: the factory line forwards its devices' CSRs in a
	// batch and the SP's CA certifies them; one bad item does not stop
	// the rest.
	b4 := s.bundle("dev-4", s.lineT)
	b5 := s.bundle("dev-5", s.lineT)
	b6 := s.bundle("dev-6", s.tool) // another OBF's token
	line := s.obfConn(s.lineT, s.lineTKey)
	csr4, csr5 := deviceCSR(t, b4.AssignedID), deviceCSR(t, b5.AssignedID)
	batch := []client.ForwardItem{
		{Token: b4.Token, AssignedID: b4.AssignedID, CSR: csr4},
		{Token: b5.Token, AssignedID: b5.AssignedID, Certificate: pemCert(obsIssue(t, nil, nil, b5.AssignedID))}, // the retired sub-CA mode
		{Token: b6.Token, AssignedID: b6.AssignedID, CSR: deviceCSR(t, b6.AssignedID)},
		{Token: b5.Token, AssignedID: b4.AssignedID, CSR: csr5}, // wrong assigned ID
		{Token: "no-such-token", AssignedID: b5.AssignedID, CSR: csr5},
		{Token: b5.Token, AssignedID: b5.AssignedID, CSR: csr5},
	}
	res, err = line.Forward(ctx, batch)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"recorded", "sub_ca_retired", "token_mismatch", "token_mismatch", "token_unknown", "recorded"}
	for i, r := range res {
		got := r.Status
		if got == "refused" {
			got = r.Code
		}
		if got != want[i] {
			t.Errorf("item %d: %s (%s), want %s", i, got, r.Message, want[i])
		}
	}
	chain4 := parsePEMCerts(t, res[0].Certificate)
	opensslVerify(t, anchorPath, chain4)
	if c4 := chain4[0]; c4.Subject.CommonName != b4.AssignedID || len(c4.URIs) != 1 || c4.URIs[0].String() != "https://sp.example/"+b4.AssignedID ||
		len(c4.CRLDistributionPoints) != 1 || len(c4.OCSPServer) != 1 {
		t.Fatalf("forwarded CSR's certificate: CN %q URIs %v CRL %v OCSP %v", c4.Subject.CommonName, c4.URIs, c4.CRLDistributionPoints, c4.OCSPServer)
	}
	again, err := line.Forward(ctx, batch)
	if err != nil || again[0].Status != "replayed" || again[5].Status != "replayed" || again[0].Certificate != res[0].Certificate {
		t.Fatalf("resent batch: %v %+v", err, again)
	}
	status, detail := s.call(s.alice, "GET", "/api/v1/devices/dev-4", "", nil)
	if status != 200 || detail["state"] != "enrolled" || len(detail["credentials"].([]any)) != 1 {
		t.Fatalf("dev-4 after forwarding: %d %v", status, detail)
	}

	// Forwarding needs a trusted OBF's certificate: none, or a device's, is refused.
	anchor := parsePEMCerts(t, readFile(t, anchorPath))
	if _, err := client.NewConn(s.base, anchor, nil).Forward(ctx, batch[:1]); !isCode(err, "client_certificate_required") {
		t.Fatalf("forward without a certificate: %v", err)
	}
	if _, err := client.NewConn(s.base, anchor, devTLS).Forward(ctx, batch[:1]); !isCode(err, "not_a_trusted_obf") {
		t.Fatalf("forward with a device certificate: %v", err)
	}
	// The run shows on /metrics: every path, tokens issued, CA expiry.
	resp, err := http.Get(s.ops + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Header.Get("X-Request-ID") == "" {
		t.Error("no X-Request-ID on the answer")
	}
	for _, want := range []string{
		`credfactory_enrolments_total{path="est",result="ok"} 1`,
		`credfactory_enrolments_total{path="est",result="replayed"} 1`,
		`credfactory_enrolments_total{path="json_key",result="ok"} 1`,
		`credfactory_enrolments_total{path="forward_cert",result="sub_ca_retired"} 2`,
		`credfactory_enrolments_total{path="forward_key",result="replayed"} 1`,
		`credfactory_tokens_issued_total{mode="trusted"} 4`,
		`credfactory_ca_certificate_expiry_timestamp_seconds{ca="issuing"}`,
		`credfactory_store_batch_items_count`,
	} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	big := make([]client.ForwardItem, 1001)
	for i := range big {
		big[i] = batch[0]
	}
	if _, err := line.Forward(ctx, big); !isCode(err, "batch_size") {
		t.Fatalf("1,001 items: %v", err)
	}
}

func isCode(err error, code string) bool {
	e, ok := err.(*client.Error)
	return ok && e.Code == code
}

// obsIssue plays the OBS's own MEF: a device certificate from its sub-CA
// (nil: self-signed, as a rogue line would make).
func obsIssue(t *testing.T, sub *x509.Certificate, subKey *ecdsa.PrivateKey, assignedID string) *x509.Certificate {
	t.Helper()
	devKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if sub == nil {
		return selfSigned(t, assignedID, devKey)
	}
	return issueWithKey(t, sub, subKey, assignedID, devKey)
}

// deviceCSR is a device's PKCS#10 request (PEM) for a fresh P-256 key.
func deviceCSR(t *testing.T, cn string) string {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func pemCert(c *x509.Certificate) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
}

// TestOBFVouches: a trusted OBF of the device's stakeholder proves control
// itself, calling the portal API with its client certificate, and gets a
// bundle for itself; a device's own certificate, or another OBF, may not.
func TestOBFVouches(t *testing.T) {
	s := newSeed(t)
	ctx := context.Background()
	tool := s.obfConn(s.tool, s.toolKey)
	var b client.Bundle
	err := tool.JSON(ctx, "POST", "/api/v1/devices/dev-1/enrolments", nil,
		map[string]any{"proof": map[string]any{"vouch": true}, "obfId": s.tool["obfId"]}, &b)
	if err != nil || b.Token == "" || b.MEFURI != "" {
		t.Fatalf("vouching OBF: %v %+v", err, b)
	}
	// Vouching for another OBF's enrolment is refused.
	err = tool.JSON(ctx, "POST", "/api/v1/devices/dev-2/enrolments", nil,
		map[string]any{"proof": map[string]any{"vouch": true}, "obfId": s.lineT["obfId"]}, nil)
	if !isCode(err, "bad_proof") {
		t.Fatalf("vouching for another OBF: %v", err)
	}
	// A subscriber cannot claim a vouch with an API key.
	if status, body := s.call(s.alice, "POST", "/api/v1/devices/dev-2/enrolments", "application/json",
		mustJSON(map[string]any{"proof": map[string]any{"vouch": true}, "obfId": s.tool["obfId"]})); status != 403 || errCode(body) != "not_a_trusted_obf" {
		t.Fatalf("vouch with an API key: %d %v", status, body)
	}
	// The token it got works on the trusted path, for that OBF only.
	item := client.ForwardItem{Token: b.Token, AssignedID: b.AssignedID}
	value := make([]byte, 32)
	rand.Read(value)
	item.Key = &client.ForwardKey{SUID: 22, TargetIDs: []string{"in-cse.example"}, Value: value, NotAfter: time.Now().Add(time.Hour)}
	if res, err := s.obfConn(s.lineT, s.lineTKey).Forward(ctx, []client.ForwardItem{item}); err != nil || res[0].Code != "token_mismatch" {
		t.Fatalf("another OBF forwards the vouched token: %v %+v", err, res)
	}
	if res, err := tool.Forward(ctx, []client.ForwardItem{item}); err != nil || res[0].Status != "recorded" {
		t.Fatalf("the vouching OBF forwards: %v %+v", err, res)
	}
}
