package main

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/credfactory/credfactory/client"
	zx509 "github.com/zmap/zcrypto/x509"
	"github.com/zmap/zlint/v3"
	"github.com/zmap/zlint/v3/lint"
)

// TestESTWithCurlAndOpenSSL enrols with no credfactory code on the device
// side: openssl makes the key and a CSR carrying the token as
// challengePassword, curl posts it to simpleenroll, openssl reads the PKCS#7
// answer and verifies the chain. Then the device renews with simplereenroll,
// authenticated by the certificate it just got.
func TestESTWithCurlAndOpenSSL(t *testing.T) {
	for _, tool := range []string{"curl", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed", tool)
		}
	}
	// Renewal right after enrolment: off the minimum age (mef.renew_after).
	s := newSeed(t, "CREDFACTORY_MEF_RENEW_AFTER=0s")
	b := s.bundle("dev-1", nil)
	dir := t.TempDir()
	anchor := filepath.Join(s.dir, "trust-anchor.pem")
	sh := func(name string, args ...string) string {
		t.Helper()
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	file := func(name string) string { return filepath.Join(dir, name) }
	sh("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", file("key.pem"))
	if err := os.WriteFile(file("req.cnf"), []byte(fmt.Sprintf(`[req]
distinguished_name = dn
attributes = attrs
prompt = no
[dn]
CN = %s
[attrs]
challengePassword = %s
`, b.AssignedID, b.Token)), 0o600); err != nil {
		t.Fatal(err)
	}
	sh("openssl", "req", "-new", "-key", file("key.pem"), "-config", file("req.cnf"), "-outform", "DER", "-out", file("csr.der"))
	sh("openssl", "base64", "-in", file("csr.der"), "-out", file("csr.b64"))

	// /cacerts first, as an EST client bootstraps.
	sh("curl", "-sS", "--fail", "--cacert", anchor, "-o", file("cacerts.b64"), s.base+"/.well-known/est/cacerts")
	sh("openssl", "base64", "-d", "-in", file("cacerts.b64"), "-out", file("cacerts.der"))
	if out := sh("openssl", "pkcs7", "-inform", "DER", "-in", file("cacerts.der"), "-print_certs", "-noout"); !strings.Contains(out, "Root CA") {
		t.Fatalf("cacerts holds no root: %s", out)
	}

	sh("curl", "-sS", "--fail-with-body", "--cacert", anchor, "-H", "Content-Type: application/pkcs10",
		"-H", "Content-Transfer-Encoding: base64", "--data-binary", "@"+file("csr.b64"), "-o", file("resp.b64"),
		s.base+"/.well-known/est/simpleenroll")
	sh("openssl", "base64", "-d", "-in", file("resp.b64"), "-out", file("resp.der"))
	sh("openssl", "pkcs7", "-inform", "DER", "-in", file("resp.der"), "-print_certs", "-out", file("certs.pem"))
	issued := parsePEMCerts(t, readFile(t, file("certs.pem")))
	// RFC 7030 §4.2.3: the answer holds only the issued certificate; the
	// chain is /cacerts' (the issuing CA, then the root).
	sh("openssl", "pkcs7", "-inform", "DER", "-in", file("cacerts.der"), "-print_certs", "-out", file("cacerts.pem"))
	cacerts := parsePEMCerts(t, readFile(t, file("cacerts.pem")))
	if len(issued) != 1 || len(cacerts) != 2 || issued[0].Subject.CommonName != b.AssignedID {
		t.Fatalf("simpleenroll answered %d certificates (want only the issued one) for %v, /cacerts %d", len(issued), issued[0].Subject, len(cacerts))
	}
	certs := []*x509.Certificate{issued[0], cacerts[0]} // the leaf and its chain, as a device presents them
	opensslVerify(t, anchor, certs)

	// /csrattrs (RFC 7030 §4.5): anonymously, the key policy (P-256 only
	// by default) and a subjectAltName wanted; with the certificate, also
	// exactly the names its renewal will carry.
	hdr := sh("curl", "-sS", "--fail", "--cacert", anchor, "-D", "-", "-o", file("attrs.b64"), s.base+"/.well-known/est/csrattrs")
	if !strings.Contains(hdr, "application/csrattrs") || !strings.Contains(strings.ToLower(hdr), "content-transfer-encoding: base64") {
		t.Fatalf("csrattrs headers:\n%s", hdr)
	}
	sh("openssl", "base64", "-d", "-in", file("attrs.b64"), "-out", file("attrs.der"))
	if out := sh("openssl", "asn1parse", "-inform", "DER", "-in", file("attrs.der")); !strings.Contains(out, "prime256v1") ||
		strings.Contains(out, "secp384r1") || !strings.Contains(out, "challengePassword") || !strings.Contains(out, "Subject Alternative Name") {
		t.Fatalf("anonymous csrattrs:\n%s", out)
	}
	if err := os.WriteFile(file("leaf.pem"), []byte(pemCert(certs[0])+pemCert(certs[1])), 0o600); err != nil {
		t.Fatal(err)
	}
	sh("curl", "-sS", "--fail", "--cacert", anchor, "--cert", file("leaf.pem"), "--key", file("key.pem"), "-o", file("attrs2.b64"),
		s.base+"/.well-known/est/csrattrs")
	sh("openssl", "base64", "-d", "-in", file("attrs2.b64"), "-out", file("attrs2.der"))
	if out := sh("openssl", "asn1parse", "-inform", "DER", "-in", file("attrs2.der")); !strings.Contains(out, "Extension Request") ||
		!strings.Contains(readFile(t, file("attrs2.der")), "https://sp.example/"+b.AssignedID) {
		t.Fatalf("csrattrs for the enrolled device does not name https://sp.example/%s:\n%s", b.AssignedID, out)
	}

	// A certificate the SP did not issue, naming the device: the anonymous
	// answer, no identity.
	sh("openssl", "req", "-x509", "-new", "-key", file("key.pem"), "-subj", "/CN="+b.AssignedID, "-days", "1",
		"-addext", "subjectAltName=URI:https://sp.example/"+b.AssignedID, "-out", file("forged.pem"))
	if a := sh("curl", "-sS", "--fail", "--cacert", anchor, "--cert", file("forged.pem"), "--key", file("key.pem"),
		s.base+"/.well-known/est/csrattrs"); a != readFile(t, file("attrs.b64")) {
		t.Fatalf("csrattrs for a certificate the SP did not issue is not the anonymous answer:\n%s", a)
	}

	// The issuing CA's name constraints are in play (TS-0003 §10.1.1.5)
	// and the device's URI satisfies them: openssl verify above matched
	// it, which it cannot do for a scheme-less URI.
	if len(certs) < 2 || len(certs[1].PermittedURIDomains) != 1 || certs[0].URIs[0].String() != "https://sp.example/"+b.AssignedID {
		t.Fatalf("issuing CA constraints %v, device URI %v", certs[1].PermittedURIDomains, certs[0].URIs)
	}

	// Re-enrolment (RFC 7030 §4.2.2), authenticated by the certificate
	// just issued as the TLS client certificate; openssl makes a new key
	// and a CSR for the same subject.
	if err := os.WriteFile(file("renew.cnf"), []byte("[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = "+b.AssignedID+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sh("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", file("key2.pem"))
	sh("openssl", "req", "-new", "-key", file("key2.pem"), "-config", file("renew.cnf"), "-outform", "DER", "-out", file("renew.der"))
	sh("openssl", "base64", "-in", file("renew.der"), "-out", file("renew.b64"))
	hdr = sh("curl", "-sS", "--fail-with-body", "--cacert", anchor, "--cert", file("leaf.pem"), "--key", file("key.pem"),
		"-H", "Content-Type: application/pkcs10", "-H", "Content-Transfer-Encoding: base64", "--data-binary", "@"+file("renew.b64"),
		"-D", "-", "-o", file("renewed.b64"), s.base+"/.well-known/est/simplereenroll")
	// RFC 7030 §4.2.3: certs-only, base64 with Content-Transfer-Encoding.
	if !strings.Contains(hdr, "application/pkcs7-mime; smime-type=certs-only") || !strings.Contains(strings.ToLower(hdr), "content-transfer-encoding: base64") {
		t.Fatalf("simplereenroll answer headers:\n%s", hdr)
	}
	sh("openssl", "base64", "-d", "-in", file("renewed.b64"), "-out", file("renewed.der"))
	sh("openssl", "pkcs7", "-inform", "DER", "-in", file("renewed.der"), "-print_certs", "-out", file("renewed.pem"))
	renewed := parsePEMCerts(t, readFile(t, file("renewed.pem")))
	if len(renewed) != 1 {
		t.Fatalf("simplereenroll answered %d certificates, want only the issued one (RFC 7030 §4.2.3)", len(renewed))
	}
	renewed = append(renewed, cacerts[0])
	if renewed[0].Subject.CommonName != b.AssignedID || renewed[0].SerialNumber.Cmp(certs[0].SerialNumber) == 0 ||
		len(renewed[0].URIs) != 1 || renewed[0].URIs[0].String() != certs[0].URIs[0].String() {
		t.Fatalf("renewal: %s serial %x URIs %v", renewed[0].Subject.CommonName, renewed[0].SerialNumber, renewed[0].URIs)
	}
	opensslVerify(t, anchor, renewed)
	// Linted from outside the CA, with zlint's own full registry (not
	// ca/lint.go's selection): RFC 5280's URI lints pass on both.
	for _, c := range []*x509.Certificate{certs[0], renewed[0]} {
		lintFromOutside(t, c)
	}
	// The new certificate certifies the new key: openssl's own view.
	if a, b := sh("openssl", "x509", "-in", file("renewed.pem"), "-noout", "-pubkey"), sh("openssl", "pkey", "-in", file("key2.pem"), "-pubout"); a != b {
		t.Fatalf("renewed certificate's key is not the new key:\n%s\n%s", a, b)
	}
	// The old certificate is superseded: a renewal with another key is
	// refused (a retry with the same key would get the same answer back).
	sh("openssl", "req", "-new", "-key", file("key.pem"), "-config", file("renew.cnf"), "-outform", "DER", "-out", file("renew1.der"))
	sh("openssl", "base64", "-in", file("renew1.der"), "-out", file("renew1.b64"))
	out, _ := exec.Command("curl", "-sS", "--cacert", anchor, "--cert", file("leaf.pem"), "--key", file("key.pem"),
		"-H", "Content-Type: application/pkcs10", "--data-binary", "@"+file("renew1.b64"), "-w", "%{http_code}",
		s.base+"/.well-known/est/simplereenroll").CombinedOutput()
	if !strings.Contains(string(out), "certificate_superseded") || !strings.HasSuffix(string(out), "403") {
		t.Fatalf("renewal with the superseded certificate: %s", out)
	}
	status, detail := s.call(s.alice, "GET", "/api/v1/devices/dev-1", "", nil)
	if status != 200 || len(detail["credentials"].([]any)) != 2 {
		t.Fatalf("the MAF keeps the history (2 certificates): %d %v", status, detail)
	}
	// An EST label (RFC 7030 §3.2.2) chooses the certificate's usage: a
	// certificate for use with the MAF (SUID 41), recorded as such.
	b2 := s.bundle("dev-2", nil)
	if err := os.WriteFile(file("req2.cnf"), []byte("[req]\ndistinguished_name = dn\nattributes = attrs\nprompt = no\n[dn]\nCN = "+b2.AssignedID+
		"\n[attrs]\nchallengePassword = "+b2.Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sh("openssl", "req", "-new", "-key", file("key2.pem"), "-config", file("req2.cnf"), "-outform", "DER", "-out", file("csr2.der"))
	sh("openssl", "base64", "-in", file("csr2.der"), "-out", file("csr2.b64"))
	bad, _ := exec.Command("curl", "-sS", "--cacert", anchor, "-H", "Content-Type: application/pkcs10", "--data-binary", "@"+file("csr2.b64"),
		"-w", "%{http_code}", s.base+"/.well-known/est/suid-22/simpleenroll").CombinedOutput()
	if !strings.HasPrefix(string(bad), "unknown_est_label:") || !strings.HasSuffix(string(bad), "404") {
		t.Fatalf("simpleenroll under a label that is no certificate usage: %s", bad)
	}
	sh("curl", "-sS", "--fail-with-body", "--cacert", anchor, "-H", "Content-Type: application/pkcs10", "--data-binary", "@"+file("csr2.b64"),
		"-o", file("resp2.b64"), s.base+"/.well-known/est/suid-41/simpleenroll")
	// Under the label, the other EST operations answer as without one.
	if a, b := sh("curl", "-sS", "--fail", "--cacert", anchor, s.base+"/.well-known/est/suid-41/cacerts"), readFile(t, file("cacerts.b64")); a != b {
		t.Fatalf("labelled /cacerts differs:\n%s\n%s", a, b)
	}
	if a, b := sh("curl", "-sS", "--fail", "--cacert", anchor, s.base+"/.well-known/est/suid-41/csrattrs"), readFile(t, file("attrs.b64")); a != b {
		t.Fatalf("labelled /csrattrs differs:\n%s\n%s", a, b)
	}
	if status, detail := s.call(s.alice, "GET", "/api/v1/devices/dev-2", "", nil); status != 200 || len(detail["credentials"].([]any)) != 1 ||
		detail["credentials"].([]any)[0].(map[string]any)["suid"] != float64(41) {
		t.Fatalf("the labelled enrolment's record: %d %v", status, detail)
	}
	// Renewal without a certificate this SP issued is refused.
	out, _ = exec.Command("curl", "-sS", "--cacert", anchor, "-H", "Content-Type: application/pkcs10",
		"--data-binary", "@"+file("renew.b64"), "-w", "%{http_code}", s.base+"/.well-known/est/simplereenroll").CombinedOutput()
	if !strings.HasSuffix(string(out), "401") {
		t.Fatalf("reenroll without a client certificate: %s", out)
	}
}

// TestEnrolmentBadInput: each malformed or wrong request gets a clear code
// and leaves the device's token unredeemed and the MAF without a record.
func TestEnrolmentBadInput(t *testing.T) {
	s := newSeed(t)
	b := s.bundle("dev-1", nil)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	est := func(contentType string, body []byte) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", s.base+"/.well-known/est/simpleenroll", strings.NewReader(string(body)))
		req.Header.Set("Content-Type", contentType)
		resp, err := s.client(nil).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(raw)
	}
	b64 := func(der []byte) []byte { return []byte(base64.StdEncoding.EncodeToString(der)) }
	good, _ := client.CSR(key, b.AssignedID, b.Token)
	badSig := append([]byte(nil), good...)
	badSig[len(badSig)-3] ^= 0xff
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	weak, _ := client.CSR(p224, b.AssignedID, b.Token)
	// Keys the CA could certify but the default key policy (TS-0003
	// §10.1.1.1, what /csrattrs advertises) refuses.
	p384Key, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p384, _ := client.CSR(p384Key, b.AssignedID, b.Token)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	ed, _ := client.CSR(edKey, b.AssignedID, b.Token)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsaCSR, _ := client.CSR(rsaKey, b.AssignedID, b.Token)
	noToken, _ := client.CSR(key, b.AssignedID, "")
	unknown, _ := client.CSR(key, b.AssignedID, "not-a-token")
	san, _ := asn1.Marshal([]asn1.RawValue{{Tag: 2, Class: asn1.ClassContextSpecific, Bytes: []byte("evil.example")}})
	withDNS, _ := client.CSR(key, b.AssignedID, b.Token, pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Value: san})
	withCA, _ := client.CSR(key, b.AssignedID, b.Token, pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: []byte{0x30, 0x03, 0x01, 0x01, 0xff}})
	// What the device profile would drop is refused, naming it.
	ekuServerAuth, _ := asn1.Marshal([]asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 5, 7, 3, 1}})
	withServerAuth, _ := client.CSR(key, b.AssignedID, b.Token, pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 37}, Value: ekuServerAuth})
	kuCertSign, _ := asn1.Marshal(asn1.BitString{Bytes: []byte{0x84}, BitLength: 6}) // digitalSignature, keyCertSign
	withCertSign, _ := client.CSR(key, b.AssignedID, b.Token, pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 15}, Critical: true, Value: kuCertSign})
	otherCN, _ := client.CSR(key, "Sanother-device", b.Token)
	for _, tc := range []struct {
		name, contentType string
		body              []byte
		status            int
		code              string
		names             string // what the message must name
	}{
		{"wrong media type", "application/json", b64(good), 415, "unsupported_media_type", ""},
		{"not base64", "application/pkcs10", []byte("!!!not base64!!!"), 400, "bad_request", ""},
		{"not PKCS#10", "application/pkcs10", b64([]byte("garbage bytes here")), 400, "bad_csr", ""},
		{"bad signature", "application/pkcs10", b64(badSig), 400, "bad_csr", ""},
		{"P-224 key", "application/pkcs10", b64(weak), 400, "unsupported_key", "accepts ECDSA P-256"},
		{"P-384 key", "application/pkcs10", b64(p384), 400, "unsupported_key", "ECDSA P-384 keys are refused by this SP's key policy, which accepts ECDSA P-256"},
		{"Ed25519 key", "application/pkcs10", b64(ed), 400, "unsupported_key", "Ed25519 keys are refused"},
		{"RSA key", "application/pkcs10", b64(rsaCSR), 400, "unsupported_key", "RSA 2048 keys are refused"},
		{"no challengePassword", "application/pkcs10", b64(noToken), 400, "missing_token", ""},
		{"unknown token", "application/pkcs10", b64(unknown), 403, "token_unknown", ""},
		{"DNS SAN", "application/pkcs10", b64(withDNS), 400, "csr_san_mismatch", ""},
		{"asks to be a CA", "application/pkcs10", b64(withCA), 400, "csr_extension_refused", ""},
		{"asks for serverAuth", "application/pkcs10", b64(withServerAuth), 400, "csr_extension_refused", "serverAuth"},
		{"asks for keyCertSign", "application/pkcs10", b64(withCertSign), 400, "csr_extension_refused", "keyCertSign"},
		{"names another device", "application/pkcs10", b64(otherCN), 400, "csr_subject_mismatch", "Sanother-device"},
	} {
		status, body := est(tc.contentType, tc.body)
		if status != tc.status || !strings.HasPrefix(body, tc.code+":") || !strings.Contains(body, tc.names) {
			t.Errorf("%s: %d %q, want %d %s naming %q", tc.name, status, body, tc.status, tc.code, tc.names)
		}
	}
	for _, tc := range []struct {
		name, body string
		code       string
	}{
		{"malformed JSON", `{"token":`, "bad_request"},
		{"unknown field", `{"token":"x","assignedId":"S1","csr":"eA==","extra":1}`, "bad_request"},
		{"csr and key", fmt.Sprintf(`{"token":%q,"assignedId":%q,"csr":"eA==","key":{"suid":22}}`, b.Token, b.AssignedID), "bad_request"},
		{"bad base64 CSR", fmt.Sprintf(`{"token":%q,"assignedId":%q,"csr":"@@@"}`, b.Token, b.AssignedID), "bad_encoding"},
		{"guessable request ID", fmt.Sprintf(`{"token":%q,"assignedId":%q,"requestId":"1","key":{"suid":22}}`, b.Token, b.AssignedID), "bad_request_id"},
		{"usage not for RSPF", fmt.Sprintf(`{"token":%q,"assignedId":%q,"requestId":"0123456789abcdef0123","key":{"suid":12}}`, b.Token, b.AssignedID), "bad_key_request"},
		{"certificate usage that is no certificate's", fmt.Sprintf(`{"token":%q,"assignedId":%q,"csr":%q,"suid":22}`, b.Token, b.AssignedID, b64(good)), "bad_suid"},
		{"certificate usage with a key", fmt.Sprintf(`{"token":%q,"assignedId":%q,"requestId":"0123456789abcdef0123","suid":42,"key":{"suid":22}}`, b.Token, b.AssignedID), "bad_request"},
		{"another assigned ID", fmt.Sprintf(`{"token":%q,"assignedId":"Sother","requestId":"0123456789abcdef0123","key":{"suid":22}}`, b.Token), "token_mismatch"},
	} {
		if status, body := s.call("", "POST", "/mef/v1/enrol", "application/json", []byte(tc.body)); status/100 != 4 || errCode(body) != tc.code {
			t.Errorf("%s: %d %v, want %s", tc.name, status, body, tc.code)
		}
	}
	status, detail := s.call(s.alice, "GET", "/api/v1/devices/dev-1", "", nil)
	if status != 200 || detail["state"] != "token-issued" || len(detail["credentials"].([]any)) != 0 {
		t.Fatalf("bad requests left a trace: %d %v", status, detail)
	}
	// And the token still works for the real device.
	certs, err := client.NewConn(s.base, parsePEMCerts(t, b.TrustAnchor), nil).ESTEnroll(t.Context(), good, false)
	if err != nil || certs[0].Subject.CommonName != b.AssignedID {
		t.Fatalf("the genuine request after the bad ones: %v", err)
	}
}

// TestEnrolmentBoundToDeviceCertificate: a device pre-enrolled with its
// existing certificate must present it over TLS when it enrols.
func TestEnrolmentBoundToDeviceCertificate(t *testing.T) {
	s := newSeed(t)
	devKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: "factory-cert"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &devKey.PublicKey, devKey)
	acme := strings.TrimSpace(s.cli("admin", "create-api-key", "--stakeholder", "acme"))
	rows := fmt.Sprintf(`[{"deviceId":"bound-1","claimCode":"label-bound","deviceCert":%q}]`,
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	if status, body := s.call(acme, "POST", "/api/v1/devices", "application/json", []byte(rows)); status != 200 || body["accepted"] != float64(1) {
		t.Fatalf("upload: %d %v", status, body)
	}
	s.call(acme, "POST", "/api/v1/handovers", "application/json", mustJSON(map[string]any{"subscriber": "alice", "deviceIds": []string{"bound-1"}}))
	status, body := s.call(s.alice, "POST", "/api/v1/devices/bound-1/enrolments", "application/json", []byte(`{"proof":{"claimCode":"label-bound"}}`))
	if status != 201 {
		t.Fatalf("bundle: %d %v", status, body)
	}
	anchor := parsePEMCerts(t, body["trustAnchor"].(string))
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := client.CSR(key, body["assignedId"].(string), body["token"].(string))
	if _, err := client.NewConn(s.base, anchor, nil).ESTEnroll(t.Context(), csr, false); !isCode(err, "token_mismatch") {
		t.Fatalf("without the device certificate: %v", err)
	}
	own := &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: devKey}
	if certs, err := client.NewConn(s.base, anchor, own).ESTEnroll(t.Context(), csr, false); err != nil || len(certs) != 1 {
		t.Fatalf("with the device certificate: %v", err)
	}
}

// lintFromOutside runs every zlint RFC 5280 lint on an issued certificate
// (signature included) and requires e_ext_san_uri_relative and
// e_ext_san_uri_format_invalid to pass: the URI SAN is an absolute URI.
func lintFromOutside(t *testing.T, c *x509.Certificate) {
	t.Helper()
	zc, err := zx509.ParseCertificate(c.Raw)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := lint.GlobalRegistry().Filter(lint.FilterOptions{IncludeSources: lint.SourceList{lint.RFC5280}})
	if err != nil {
		t.Fatal(err)
	}
	rs := zlint.LintCertificateEx(zc, reg)
	for _, name := range []string{"e_ext_san_uri_relative", "e_ext_san_uri_format_invalid"} {
		if r := rs.Results[name]; r == nil || r.Status != lint.Pass {
			t.Errorf("%s on %v: %+v", name, c.URIs, r)
		}
	}
	for name, r := range rs.Results {
		if r.Status >= lint.Error {
			t.Errorf("zlint %s: %s %s", name, r.Status, r.Details)
		}
	}
}
