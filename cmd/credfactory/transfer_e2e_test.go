package main

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/credfactory/credfactory/client"
	"golang.org/x/crypto/ocsp"
)

// enrolled is what `credfactory enroll` left in a directory: the
// certificate, its chain and a TLS identity built from the key.
type enrolled struct {
	leaf  *x509.Certificate
	chain []*x509.Certificate
	tls   *tls.Certificate
}

func (s *sp) enrolCert(b client.Bundle) enrolled {
	s.t.Helper()
	out := filepath.Join(s.t.TempDir(), "enrolled")
	bundle := filepath.Join(s.t.TempDir(), "bundle.json")
	mustWrite(s.t, bundle, mustJSON(b))
	s.cli("enroll", "--bundle", bundle, "--out", out)
	leaf := parsePEMCerts(s.t, readFile(s.t, filepath.Join(out, "cert.pem")))[0]
	chain := parsePEMCerts(s.t, readFile(s.t, filepath.Join(out, "chain.pem")))
	block, _ := pem.Decode([]byte(readFile(s.t, filepath.Join(out, "key.pem"))))
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		s.t.Fatal(err)
	}
	return enrolled{leaf: leaf, chain: chain, tls: &tls.Certificate{Certificate: [][]byte{leaf.Raw, chain[0].Raw}, PrivateKey: key, Leaf: leaf}}
}

// claim proves control of a device by its claim code and returns the
// answer: a bundle (201) or an error.
func (s *sp) claim(key, device, code string) (int, client.Bundle, map[string]any) {
	s.t.Helper()
	status, body := s.call(key, "POST", "/api/v1/devices/"+device+"/enrolments", "application/json",
		mustJSON(map[string]any{"proof": map[string]any{"claimCode": code}}))
	var b client.Bundle
	if err := json.Unmarshal(mustJSON(body), &b); err != nil {
		s.t.Fatal(err)
	}
	return status, b, body
}

// assertRevokedOCSP asks the SP's OCSP responder about cert and requires
// "revoked" with reason affiliationChanged, as a relying party checking the
// released device's old certificate would see it; and requires the serial
// on the CRL fetched right after (the release marks the CRL stale).
func assertRevokedOCSP(t *testing.T, s *sp, cert *x509.Certificate, chain []*x509.Certificate) {
	t.Helper()
	issuer := chain[0]
	if len(cert.OCSPServer) != 1 || len(cert.CRLDistributionPoints) != 1 {
		t.Fatalf("the certificate names OCSP %v and CRL %v", cert.OCSPServer, cert.CRLDistributionPoints)
	}
	req, err := ocsp.CreateRequest(cert, issuer, nil)
	if err != nil {
		t.Fatal(err)
	}
	hc := s.client(nil)
	resp, err := hc.Post(s.base+"/ocsp", "application/ocsp-request", bytes.NewReader(req))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	answer, err := ocsp.ParseResponseForCert(raw, cert, issuer)
	if err != nil {
		t.Fatalf("OCSP answer: %v", err)
	}
	if answer.Status != ocsp.Revoked || answer.RevocationReason != ocsp.AffiliationChanged {
		t.Fatalf("OCSP says status %d reason %d for the released device's certificate, want revoked (1), affiliationChanged (3)",
			answer.Status, answer.RevocationReason)
	}
	resp, err = hc.Get(s.base + "/ca/v1/crl/issuing.crl")
	if err != nil {
		t.Fatal(err)
	}
	der, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatalf("CRL: %v", err)
	}
	if err := crl.CheckSignatureFrom(issuer); err != nil {
		t.Fatalf("CRL signature: %v", err)
	}
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber.Cmp(cert.SerialNumber) == 0 {
			if e.ReasonCode != ocsp.AffiliationChanged {
				t.Fatalf("CRL reason %d, want affiliationChanged", e.ReasonCode)
			}
			return
		}
	}
	t.Fatalf("the released device's certificate %x is not on the CRL (%d entries)", cert.SerialNumber, len(crl.RevokedCertificateEntries))
}

// TestOwnershipTransfer walks the whole transfer on the real binary: alice
// enrols a device (a certificate over EST and a shared key), releases it,
// loses sight of it, and her credentials stop working; bob proves control
// and enrols it afresh with a new assigned ID; an sp-admin can force a
// release of bob's device.
func TestOwnershipTransfer(t *testing.T) {
	s := startSP(t, "CREDFACTORY_PORTAL_SP_DOMAIN=sp.example")
	admin := s.stakeholder("admin", "sp-admin")
	acme := s.stakeholder("acme", "manufacturer")
	alice := s.stakeholder("alice", "subscriber")
	bob := s.stakeholder("bob", "subscriber")
	if status, body := s.call(acme, "POST", "/api/v1/devices", "text/csv", []byte("deviceId,claimCode\ntr-a,label-tr-a\ntr-t,label-tr-t\n")); status != 200 || body["accepted"] != float64(2) {
		t.Fatalf("upload: %d %v", status, body)
	}
	if status, body := s.call(acme, "POST", "/api/v1/handovers", "application/json", mustJSON(map[string]any{"subscriber": "alice", "deviceIds": []string{"tr-a", "tr-t"}})); status != 200 {
		t.Fatalf("hand over: %d %v", status, body)
	}
	bundle := func(key, device, code string) client.Bundle {
		t.Helper()
		status, b, body := s.claim(key, device, code)
		if status != 201 {
			t.Fatalf("bundle for %s: %d %v", device, status, body)
		}
		return b
	}

	// tr-t is the Target that fetches tr-a's shared key from the MAF.
	target := s.enrolCert(bundle(alice, "tr-t", "label-tr-t"))
	asTarget := s.client(target.tls)

	// Alice enrols tr-a: a certificate over EST, then a shared key (SAEF,
	// SUID 22) for tr-t; a third request leaves a token open.
	b1 := bundle(alice, "tr-a", "label-tr-a")
	old := s.enrolCert(b1)
	b2 := bundle(alice, "tr-a", "label-tr-a")
	if b2.AssignedID != b1.AssignedID {
		t.Fatalf("a re-request changed the assigned ID: %s, %s", b1.AssignedID, b2.AssignedID)
	}
	pskDir := filepath.Join(t.TempDir(), "psk")
	bundle2 := filepath.Join(t.TempDir(), "bundle.json")
	mustWrite(t, bundle2, mustJSON(b2))
	s.cli("enroll", "--bundle", bundle2, "--out", pskDir, "--psk", "--suid", "22", "--target", target.leaf.Subject.CommonName)
	var psk client.KeyAnswer
	if err := json.Unmarshal([]byte(readFile(t, filepath.Join(pskDir, "psk.json"))), &psk); err != nil {
		t.Fatal(err)
	}
	fetch := "/maf/v1/fetchCredentials/" + psk.KeID + "/22"
	if status, body := s.callWith(asTarget, "", "GET", fetch, "", nil); status != 200 || body["credential"] != base64.StdEncoding.EncodeToString(psk.Key) {
		t.Fatalf("the Target fetches the key before the release: %d %v", status, body)
	}
	open := bundle(alice, "tr-a", "label-tr-a")
	fp := sha256.Sum256(old.leaf.Raw)
	byFingerprint := "/maf/v1/credentials?sha256=" + hex.EncodeToString(fp[:])
	if status, body := s.callWith(s.client(old.tls), "", "GET", byFingerprint, "", nil); status != 200 || len(body["credentials"].([]any)) != 1 {
		t.Fatalf("the device asks for its certificate's record: %d %v", status, body)
	}

	// Nobody but the owner (or an sp-admin) releases it: bob's 404 says
	// nothing about the device, acme no longer holds it.
	for _, who := range []string{bob, acme} {
		if status, body := s.call(who, "POST", "/api/v1/devices/tr-a/release", "application/json", nil); status != 404 || errCode(body) != "device_not_found" {
			t.Fatalf("a stranger releases: %d %v", status, body)
		}
	}
	if status, body := s.call(alice, "POST", "/api/v1/devices/tr-a/release", "application/json", []byte(`{"revocationReason":"removeFromCRL"}`)); status != 400 || errCode(body) != "bad_reason" {
		t.Fatalf("release with a bad reason: %d %v", status, body)
	}

	// Alice releases tr-a.
	status, rel := s.call(alice, "POST", "/api/v1/devices/tr-a/release", "application/json", []byte(`{"reason":"sold to bob"}`))
	if status != 200 || len(rel["revoked"].([]any)) != 2 || rel["cancelledTokens"] != float64(1) || rel["state"] != "pre-enrolled" {
		t.Fatalf("release: %d %v", status, rel)
	}
	if status, body := s.call(alice, "GET", "/api/v1/devices/tr-a", "", nil); status != 404 {
		t.Fatalf("alice still sees the released device: %d %v", status, body)
	}
	if _, list := s.call(alice, "GET", "/api/v1/devices", "", nil); strings.Contains(string(mustJSON(list)), `"tr-a"`) {
		t.Fatalf("alice still lists the released device: %v", list)
	}
	// Her shared key is no longer returned to the Target...
	if status, body := s.callWith(asTarget, "", "GET", fetch, "", nil); status != 410 || errCode(body) != "credential_revoked" {
		t.Fatalf("key retrieval after the release: %d %v", status, body)
	}
	// ...her certificate is revoked in the registry, so the MAF refuses it
	// as a client certificate...
	if status, body := s.callWith(s.client(old.tls), "", "GET", byFingerprint, "", nil); status != 401 || errCode(body) != "client_certificate_revoked" {
		t.Fatalf("the old certificate after the release: %d %v", status, body)
	}
	assertRevokedOCSP(t, s, old.leaf, old.chain)
	// ...and her open token is dead.
	openPath := filepath.Join(t.TempDir(), "bundle.json")
	mustWrite(t, openPath, mustJSON(open))
	if out, err := exec.Command(bin, "enroll", "--bundle", openPath, "--out", t.TempDir()).CombinedOutput(); err == nil || !strings.Contains(string(out), "token_cancelled") {
		t.Fatalf("the open token after the release: %v\n%s", err, out)
	}

	// Bob proves control with the code alice handed him and enrols afresh: a new assigned
	// ID and a certificate the MAF accepts. Alice, too late, gets 404.
	if status, _, body := s.claim(bob, "tr-a", "wrong-label"); status != 403 || errCode(body) != "wrong_claim_code" {
		t.Fatalf("bob with a wrong code: %d %v", status, body)
	}
	// The label's code died with the release: the release's new one
	// claims the device.
	newCode, _ := rel["claimCode"].(string)
	if status, _, body := s.claim(bob, "tr-a", "label-tr-a"); status != 403 {
		t.Fatalf("bob with the label's code after the release: %d %v", status, body)
	}
	nb := bundle(bob, "tr-a", newCode)
	if nb.AssignedID == b1.AssignedID || !strings.HasPrefix(nb.AssignedID, "S") {
		t.Fatalf("bob's assigned ID %q, want a fresh one (alice's was %s)", nb.AssignedID, b1.AssignedID)
	}
	if status, _, body := s.claim(alice, "tr-a", newCode); status != 404 {
		t.Fatalf("alice claims bob's device: %d %v", status, body)
	}
	fresh := s.enrolCert(nb)
	opensslVerify(t, filepath.Join(s.dir, "trust-anchor.pem"), append([]*x509.Certificate{fresh.leaf}, fresh.chain...))
	if fresh.leaf.Subject.CommonName != nb.AssignedID {
		t.Fatalf("bob's certificate names %s, want %s", fresh.leaf.Subject.CommonName, nb.AssignedID)
	}
	status, list := s.callWith(s.client(fresh.tls), "", "GET", "/maf/v1/credentials?assignedId="+url.QueryEscape(nb.AssignedID), "", nil)
	if status != 200 || len(list["credentials"].([]any)) != 1 || list["credentials"].([]any)[0].(map[string]any)["status"] != "active" {
		t.Fatalf("bob's credential in the MAF: %d %v", status, list)
	}
	status, dev := s.call(bob, "GET", "/api/v1/devices/tr-a", "", nil)
	if status != 200 || dev["state"] != "enrolled" || dev["assignedId"] != nb.AssignedID {
		t.Fatalf("bob's device: %d %v", status, dev)
	}

	// Bob revokes his certificate's usage through the portal, then an
	// sp-admin forces a release of the device.
	if status, body := s.call(bob, "POST", "/api/v1/devices/tr-a/revoke", "application/json", []byte(`{"suids":[42],"reason":"keyCompromise"}`)); status != 200 || len(body["revoked"].([]any)) != 1 {
		t.Fatalf("bob revokes SUID 42: %d %v", status, body)
	}
	if status, body := s.call(bob, "POST", "/api/v1/devices/tr-a/revoke", "application/json", []byte(`{"reason":"keyCompromise"}`)); status != 200 || len(body["revoked"].([]any)) != 0 {
		t.Fatalf("revoking again: %d %v", status, body)
	}
	status, forced := s.call(admin, "POST", "/api/v1/devices/tr-a/release", "application/json", []byte(`{"reason":"court order"}`))
	if status != 200 || forced["state"] != "pre-enrolled" {
		t.Fatalf("sp-admin's forced release: %d %v", status, forced)
	}
	if status, _ := s.call(bob, "GET", "/api/v1/devices/tr-a", "", nil); status != 404 {
		t.Fatalf("bob still sees the device after a forced release: %d", status)
	}
	status, dev = s.call(acme, "GET", "/api/v1/devices/tr-a", "", nil)
	if status != 200 || dev["state"] != "pre-enrolled" || dev["assignedId"] != nil || dev["ownerId"] != nil {
		t.Fatalf("the manufacturer's view after the release: %d %v", status, dev)
	}
	audit := fmt.Sprint(dev["audit"])
	if !strings.Contains(audit, "device.release") || !strings.Contains(audit, "admin") {
		t.Fatalf("the audit trail lacks the forced release: %s", audit)
	}
}

func mustWrite(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
