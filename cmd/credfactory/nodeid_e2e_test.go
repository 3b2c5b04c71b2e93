package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/credfactory/credfactory/ca"
	"github.com/credfactory/credfactory/client"
	"github.com/credfactory/credfactory/pki"
	"github.com/smallstep/pkcs7"
)

// TestNodeIDCertificateWithCurlAndOpenSSL: the Enrolling Stakeholder binds
// a Node-ID to a device; the device, with nothing but openssl and curl,
// fetches the node CA under the EST label node-id, is refused a CSR naming
// another Node-ID, enrols for its own, gets a certificate naming it that
// openssl verify accepts through the node CA (and not through the
// URI-constrained issuing CA), is told its identity by /csrattrs, renews,
// and its revoked certificates appear on the node CA's CRL, signed by the
// node CA, and not on the issuing CA's.
func TestNodeIDCertificateWithCurlAndOpenSSL(t *testing.T) {
	// CRL and OCSP on a plain-HTTP listener, as relying parties fetch them.
	s := newSeed(t, "CREDFACTORY_MEF_RENEW_AFTER=0s", "CREDFACTORY_CA_STATUS_LISTEN="+freePort(t))
	const node = "urn:gsma:imei:90420156-025763-0"
	dir := t.TempDir()
	anchor := filepath.Join(s.dir, "trust-anchor.pem")
	file := func(name string) string { return filepath.Join(dir, name) }
	sh := func(name string, args ...string) string {
		t.Helper()
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	// Without a bound Node-ID the device is told so, and its token stays
	// good for the Node-ID certificate once one is bound.
	b := s.bundle("dev-1", nil)
	sh("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", file("key.pem"))
	csr := func(name, cn, san, token string) string {
		t.Helper()
		cnf := "[req]\ndistinguished_name = dn\nprompt = no\n"
		if token != "" {
			cnf += "attributes = attrs\n"
		}
		if san != "" {
			cnf += "req_extensions = ext\n[ext]\nsubjectAltName = URI:" + san + "\n"
		}
		cnf += "[dn]\nCN = " + cn + "\n"
		if token != "" {
			cnf += "[attrs]\nchallengePassword = " + token + "\n"
		}
		if err := os.WriteFile(file(name+".cnf"), []byte(cnf), 0o600); err != nil {
			t.Fatal(err)
		}
		sh("openssl", "req", "-new", "-key", file("key.pem"), "-config", file(name+".cnf"), "-outform", "DER", "-out", file(name+".der"))
		sh("openssl", "base64", "-in", file(name+".der"), "-out", file(name+".b64"))
		return file(name + ".b64")
	}
	post := func(body, path string, cert ...string) (string, string) {
		t.Helper()
		args := []string{"-sS", "--cacert", anchor, "-H", "Content-Type: application/pkcs10", "-H", "Content-Transfer-Encoding: base64",
			"--data-binary", "@" + body, "-w", "\n%{http_code}"}
		if len(cert) == 2 {
			args = append(args, "--cert", cert[0], "--key", cert[1])
		}
		out, err := exec.Command("curl", append(args, s.base+path)...).CombinedOutput()
		if err != nil {
			t.Fatalf("curl %s: %v\n%s", path, err, out)
		}
		i := strings.LastIndexByte(string(out), '\n')
		return string(out[:i]), string(out[i+1:])
	}
	certsOf := func(b64, name string) []*x509.Certificate {
		t.Helper()
		if err := os.WriteFile(file(name+".b64"), []byte(b64), 0o600); err != nil {
			t.Fatal(err)
		}
		sh("openssl", "base64", "-d", "-in", file(name+".b64"), "-out", file(name+".der"))
		sh("openssl", "pkcs7", "-inform", "DER", "-in", file(name+".der"), "-print_certs", "-out", file(name+".pem"))
		return parsePEMCerts(t, readFile(t, file(name+".pem")))
	}

	good := csr("good", node, node, b.Token)
	if body, code := post(good, "/.well-known/est/node-id/simpleenroll"); code != "409" || !strings.HasPrefix(body, "no_node_id:") {
		t.Fatalf("Node-ID enrolment with none bound: %s %s", code, body)
	}
	if status, body := s.call(s.alice, "POST", "/api/v1/devices/dev-1/node-id", "application/json", mustJSON(map[string]string{"nodeId": node})); status != 200 || body["nodeId"] != node {
		t.Fatalf("bind the Node-ID: %d %v", status, body)
	}

	// The node CA, as the label selects it (RFC 7030 §3.2.2); the
	// unlabelled /cacerts still serves the issuing CA alone.
	cacerts := certsOf(sh("curl", "-sS", "--fail", "--cacert", anchor, s.base+"/.well-known/est/node-id/cacerts"), "nodecacerts")
	issuingCerts := certsOf(sh("curl", "-sS", "--fail", "--cacert", anchor, s.base+"/.well-known/est/cacerts"), "cacerts")
	if len(cacerts) != 2 || !cacerts[1].Equal(parsePEMCerts(t, readFile(t, anchor))[0]) || len(issuingCerts) != 2 || cacerts[0].Equal(issuingCerts[0]) {
		t.Fatalf("node-id /cacerts: %d certificates; /cacerts %d", len(cacerts), len(issuingCerts))
	}
	nodeCA := cacerts[0]
	if err := os.WriteFile(file("nodeca.pem"), []byte(pemCert(nodeCA)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file("issuing.pem"), []byte(pemCert(issuingCerts[0])), 0o600); err != nil {
		t.Fatal(err)
	}

	// A CSR naming another Node-ID, or the AE-ID, is refused; the token
	// stays unspent.
	for name, san := range map[string]string{"other": "urn:gsma:imei:90420156-025763-1", "aeid": "https://sp.example/" + b.AssignedID} {
		if body, code := post(csr(name, node, san, b.Token), "/.well-known/est/node-id/simpleenroll"); code != "400" || !strings.HasPrefix(body, "csr_san_mismatch:") {
			t.Fatalf("CSR naming %s: %s %s", san, code, body)
		}
	}
	body, code := post(good, "/.well-known/est/node-id/simpleenroll")
	if code != "200" {
		t.Fatalf("Node-ID enrolment: %s %s", code, body)
	}
	issued := certsOf(body, "leaf")
	leaf := issued[0]
	if len(issued) != 1 || len(leaf.URIs) != 1 || leaf.URIs[0].String() != node || len(leaf.DNSNames)+len(leaf.IPAddresses) != 0 ||
		leaf.Subject.CommonName != node || leaf.CheckSignatureFrom(nodeCA) != nil || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth ||
		len(leaf.CRLDistributionPoints) != 1 || !strings.HasSuffix(leaf.CRLDistributionPoints[0], "/ca/v1/crl/node.crl") {
		t.Fatalf("Node-ID certificate: %d certs, SAN %v, CN %q, CRL %v", len(issued), leaf.URIs, leaf.Subject.CommonName, leaf.CRLDistributionPoints)
	}
	// openssl verify -CAfile root -untrusted nodeCA accepts it; through
	// the issuing CA (URI constraint on the SP domain) it fails.
	opensslVerify(t, anchor, []*x509.Certificate{leaf, nodeCA})
	if out, err := exec.Command("openssl", "verify", "-CAfile", anchor, "-untrusted", file("issuing.pem"), file("leaf.pem")).CombinedOutput(); err == nil {
		t.Fatalf("openssl verifies the Node-ID certificate through the issuing CA:\n%s", out)
	}
	lintFromOutside(t, leaf)

	// Recorded in the MAF as a Node-ID certificate (Credential-ID type 34).
	status, detail := s.call(s.alice, "GET", "/api/v1/devices/dev-1", "", nil)
	creds, _ := detail["credentials"].([]any)
	if status != 200 || len(creds) != 1 || !strings.HasPrefix(creds[0].(map[string]any)["credentialId"].(string), "34-") || detail["nodeId"] != node {
		t.Fatalf("device record: %d %v", status, detail)
	}
	firstID := creds[0].(map[string]any)["credentialId"].(string)
	// The Node-ID cannot move while the certificate is active.
	if status, body := s.call(s.alice, "POST", "/api/v1/devices/dev-1/node-id", "application/json", mustJSON(map[string]string{"nodeId": "urn:oid:1.2.3"})); status != 409 || errCode(body) != "node_id_in_use" {
		t.Fatalf("change under an active certificate: %d %v", status, body)
	}

	// /csrattrs under the label names the Node-ID to the device presenting
	// its certificate.
	if err := os.WriteFile(file("client.pem"), []byte(pemCert(leaf)+pemCert(nodeCA)), 0o600); err != nil {
		t.Fatal(err)
	}
	attrs := sh("curl", "-sS", "--fail", "--cacert", anchor, "--cert", file("client.pem"), "--key", file("key.pem"), s.base+"/.well-known/est/node-id/csrattrs")
	if err := os.WriteFile(file("attrs.b64"), []byte(attrs), 0o600); err != nil {
		t.Fatal(err)
	}
	sh("openssl", "base64", "-d", "-in", file("attrs.b64"), "-out", file("attrs.der"))
	if !strings.Contains(readFile(t, file("attrs.der")), node) {
		t.Fatalf("csrattrs does not name %s", node)
	}

	// Renewal (RFC 7030 §4.2.2), authenticated by the Node-ID certificate.
	sh("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", file("key.pem.new"))
	if err := os.Rename(file("key.pem"), file("key.pem.old")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(file("key.pem.new"), file("key.pem")); err != nil {
		t.Fatal(err)
	}
	body, code = post(csr("renew", node, "", ""), "/.well-known/est/node-id/simplereenroll", file("client.pem"), file("key.pem.old"))
	if code != "200" {
		t.Fatalf("renewal: %s %s", code, body)
	}
	renewed := certsOf(body, "renewed")[0]
	if renewed.URIs[0].String() != node || renewed.CheckSignatureFrom(nodeCA) != nil || renewed.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		t.Fatalf("renewed: %v", renewed.URIs)
	}
	opensslVerify(t, anchor, []*x509.Certificate{renewed, nodeCA})
	lintFromOutside(t, renewed)
	status, detail = s.call(s.alice, "GET", "/api/v1/devices/dev-1", "", nil)
	creds, _ = detail["credentials"].([]any)
	var renewedID string
	for _, c := range creds {
		if id := c.(map[string]any)["credentialId"].(string); id != firstID && strings.HasPrefix(id, "34-") {
			renewedID = id
		}
	}
	if status != 200 || len(creds) != 2 || renewedID == "" {
		t.Fatalf("after renewal: %d %v", status, detail)
	}

	// Revocation: the renewed certificate (keyCompromise) and the one it
	// superseded are on the node CA's CRL, signed by the node CA; the
	// issuing CA's CRL lists neither.
	if status, body := s.call(s.alice, "POST", "/api/v1/devices/dev-1/revoke", "application/json",
		mustJSON(map[string]any{"credentialId": renewedID, "reason": "keyCompromise"})); status != 200 {
		t.Fatalf("revoke: %d %v", status, body)
	}
	fetch := func(url, name string) string {
		t.Helper()
		resp, err := s.client(nil).Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		der, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s", url, resp.StatusCode, der)
		}
		if err := os.WriteFile(file(name+".der"), der, 0o600); err != nil {
			t.Fatal(err)
		}
		sh("openssl", "crl", "-inform", "DER", "-in", file(name+".der"), "-out", file(name+".pem"))
		return sh("openssl", "crl", "-in", file(name+".pem"), "-noout", "-text")
	}
	nodeCRL := fetch(renewed.CRLDistributionPoints[0], "node")
	for _, c := range []*x509.Certificate{leaf, renewed} {
		if !strings.Contains(nodeCRL, fmt.Sprintf("%X", c.SerialNumber)) {
			t.Errorf("the node CA's CRL lacks serial %X:\n%s", c.SerialNumber, nodeCRL)
		}
	}
	if !strings.Contains(nodeCRL, "Key Compromise") || !strings.Contains(nodeCRL, "Superseded") {
		t.Errorf("the node CA's CRL lacks the reasons:\n%s", nodeCRL)
	}
	if out := sh("openssl", "crl", "-in", file("node.pem"), "-CAfile", file("nodeca.pem"), "-noout"); !strings.Contains(out, "verify OK") {
		t.Fatalf("the node CRL is not signed by the node CA: %s", out)
	}
	if out, err := exec.Command("openssl", "crl", "-in", file("node.pem"), "-CAfile", file("issuing.pem"), "-noout").CombinedOutput(); err == nil && strings.Contains(string(out), "verify OK") {
		t.Fatalf("the node CRL verifies with the issuing CA's key: %s", out)
	}
	if err := os.WriteFile(file("renewed-leaf.pem"), []byte(pemCert(renewed)), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("openssl", "verify", "-crl_check", "-CAfile", anchor, "-untrusted", file("nodeca.pem"),
		"-CRLfile", file("node.pem"), file("renewed-leaf.pem")).CombinedOutput(); err == nil || !strings.Contains(string(out), "revoked") {
		t.Fatalf("openssl verify -crl_check accepts the revoked Node-ID certificate: %v\n%s", err, out)
	}
	// OCSP answers for the node CA's certificates too: revoked.
	if out, err := exec.Command("openssl", "ocsp", "-issuer", file("nodeca.pem"), "-cert", file("renewed-leaf.pem"), "-url", renewed.OCSPServer[0],
		"-CAfile", anchor, "-timeout", "20").CombinedOutput(); err != nil || !strings.Contains(string(out), "Response verify OK") ||
		!strings.Contains(string(out), file("renewed-leaf.pem")+": revoked") {
		t.Fatalf("openssl ocsp for the revoked Node-ID certificate: %v\n%s", err, out)
	}
	issuingCRL := fetch(strings.Replace(renewed.CRLDistributionPoints[0], "/node.crl", "/issuing.crl", 1), "issuing")
	for _, c := range []*x509.Certificate{leaf, renewed} {
		if strings.Contains(issuingCRL, fmt.Sprintf("%X", c.SerialNumber)) {
			t.Errorf("the issuing CA's CRL lists the Node-ID certificate %X", c.SerialNumber)
		}
	}
}

// TestAddNodeCACommand: an installation made before the node CA gets it
// from credfactory admin add-node-ca, certified by its root; a second run
// changes nothing.
func TestAddNodeCACommand(t *testing.T) {
	old := &sp{t: t, dir: t.TempDir(), env: cleanEnv()}
	old.cli("init")
	if err := os.Remove(filepath.Join(old.dir, pki.NodeCertFile)); err != nil {
		t.Fatal(err)
	}
	old.env = append(old.env, "CREDFACTORY_CA_NODE_KEY=pkcs11:object=credfactory-node-ca-upgrade;type=private")
	out := old.cli("admin", "add-node-ca")
	if !strings.Contains(out, "created HSM key pkcs11:object=credfactory-node-ca-upgrade") || !strings.Contains(out, "created node CA certificate") {
		t.Fatalf("add-node-ca: %s", out)
	}
	if out := old.cli("admin", "add-node-ca"); !strings.Contains(out, "nothing to do") {
		t.Fatalf("a second add-node-ca: %s", out)
	}
	nodePEM := readFile(t, filepath.Join(old.dir, pki.NodeCertFile))
	certs, err := ca.ParseCertsPEM([]byte(nodePEM))
	if err != nil || len(certs) != 1 || !certs[0].IsCA || certs[0].ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Fatalf("node CA certificate: %v", err)
	}
	if out, err := exec.Command("openssl", "verify", "-CAfile", filepath.Join(old.dir, "trust-anchor.pem"),
		filepath.Join(old.dir, pki.NodeCertFile)).CombinedOutput(); err != nil {
		t.Fatalf("openssl verify of the node CA: %v\n%s", err, out)
	}
}

// TestServeWithoutNodeCAThenAddIt: an installation made before the node
// CA serves as before (ready, every other path working), answers Node-ID
// enrolments 503 node_ca_missing with the token unspent, and never makes
// the CA itself; after credfactory admin add-node-ca and a restart, the
// same token enrols for a Node-ID certificate and the node CRL is served.
func TestServeWithoutNodeCAThenAddIt(t *testing.T) {
	s := initSP(t, "CREDFACTORY_PORTAL_SP_DOMAIN=sp.example")
	if err := os.Remove(filepath.Join(s.dir, pki.NodeCertFile)); err != nil {
		t.Fatal(err)
	}
	s.env = append(s.env, "CREDFACTORY_CA_NODE_KEY=pkcs11:object=credfactory-node-ca-later;type=private")
	s.serve(freePort(t))
	if !strings.Contains(s.logs.String(), "no node CA") {
		t.Fatalf("serve does not say the node CA is missing:\n%s", s.logs.String())
	}
	acme := s.stakeholder("acme", "manufacturer")
	if status, body := s.call(acme, "POST", "/api/v1/devices", "text/csv", []byte("deviceId,claimCode\nnd-1,label-nd-1\n")); status != 200 {
		t.Fatalf("upload: %d %v", status, body)
	}
	const node = "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6"
	if status, body := s.call(acme, "POST", "/api/v1/devices/nd-1/node-id", "application/json", mustJSON(map[string]string{"nodeId": node})); status != 200 {
		t.Fatalf("bind: %d %v", status, body)
	}
	status, bundle := s.call(acme, "POST", "/api/v1/devices/nd-1/enrolments", "application/json",
		mustJSON(map[string]any{"proof": map[string]any{"claimCode": "label-nd-1"}}))
	if status != 201 {
		t.Fatalf("bundle: %d %v", status, bundle)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, err := client.CSR(key, "", bundle["token"].(string))
	if err != nil {
		t.Fatal(err)
	}
	enrol := func() (int, string) {
		t.Helper()
		code, _, body := s.send(s.client(nil), "", "POST", "/.well-known/est/node-id/simpleenroll", "application/pkcs10",
			[]byte(base64.StdEncoding.EncodeToString(csr)))
		return code, string(body)
	}
	if code, body := enrol(); code != 503 || !strings.HasPrefix(body, "node_ca_missing:") {
		t.Fatalf("Node-ID enrolment without a node CA: %d %s", code, body)
	}
	if code, _, body := s.send(s.client(nil), "", "GET", "/.well-known/est/node-id/cacerts", "", nil); code != 503 {
		t.Fatalf("node-id /cacerts without a node CA: %d %s", code, body)
	}
	if code, _, _ := s.send(s.client(nil), "", "GET", "/ca/v1/crl/issuing.crl", "", nil); code != 200 {
		t.Fatalf("issuing CRL: %d", code)
	}
	s.stop()
	if _, err := os.Stat(filepath.Join(s.dir, pki.NodeCertFile)); err == nil {
		t.Fatal("serve made a node CA")
	}

	if out := s.cli("admin", "add-node-ca"); !strings.Contains(out, "created node CA certificate") {
		t.Fatalf("add-node-ca: %s", out)
	}
	s.serve(freePort(t))
	code, body := enrol()
	if code != 200 {
		t.Fatalf("Node-ID enrolment after add-node-ca, same token: %d %s", code, body)
	}
	der, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(body), ""))
	if err != nil {
		t.Fatal(err)
	}
	p7, err := pkcs7.Parse(der)
	if err != nil || len(p7.Certificates) != 1 || p7.Certificates[0].URIs[0].String() != node {
		t.Fatalf("answer: %v", err)
	}
	if code, _, _ := s.send(s.client(nil), "", "GET", "/ca/v1/crl/node.crl", "", nil); code != 200 {
		t.Fatalf("node CRL: %d", code)
	}
}
