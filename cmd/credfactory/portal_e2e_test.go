package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	stdcsv "encoding/csv"
	"encoding/pem"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"
)

// TestPortalAPI walks the portal's JSON API on the real binary: bulk
// pre-enrolment with bad rows, hand-over, tenancy, the three proofs of
// control, the OBF registry and API key revocation.
func TestPortalAPI(t *testing.T) {
	s := startSP(t)
	admin := s.stakeholder("admin", "sp-admin")
	acme := s.stakeholder("acme", "manufacturer")
	alice := s.stakeholder("alice", "subscriber")
	bob := s.stakeholder("bob", "subscriber")

	// A device that already has a certificate (from its manufacturer).
	devKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "acme-cert-1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	devDER, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &devKey.PublicKey, devKey)
	devPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: devDER}))

	var csv strings.Builder
	csv.WriteString("deviceId,claimCode,deviceCert\n")
	for i := 0; i < 200; i++ {
		fmt.Fprintf(&csv, "acme-%04d,claim-%04d,\n", i, i)
	}
	w := stdcsv.NewWriter(&csv)
	_ = w.Write([]string{"acme-cert-1", "", devPEM})
	w.Flush()
	csv.WriteString("bad id!,claim-x,\n")         // row 203: bad ID
	csv.WriteString("acme-0001,claim-0001,\n")    // row 204: duplicate in the upload
	csv.WriteString("acme-short,abc,\n")          // row 205: claim code too short
	csv.WriteString("acme-badcert,,not a cert\n") // row 206: bad PEM
	status, report := s.call(acme, "POST", "/api/v1/devices", "text/csv", []byte(csv.String()))
	if status != 200 || report["accepted"] != float64(201) || len(report["rejected"].([]any)) != 4 {
		t.Fatalf("upload: %d %v", status, report)
	}
	// Idempotent re-upload; subscribers may not upload.
	if status, report := s.call(acme, "POST", "/api/v1/devices", "text/csv", []byte(csv.String())); status != 200 || report["unchanged"] != float64(201) || report["inserted"] != float64(0) {
		t.Fatalf("re-upload: %d %v", status, report)
	}
	if status, body := s.call(alice, "POST", "/api/v1/devices", "application/json", []byte(`[{"deviceId":"x"}]`)); status != 403 {
		t.Fatalf("subscriber upload: %d %v", status, body)
	}
	if status, body := s.call(acme, "POST", "/api/v1/devices", "text/csv", []byte("id,code\nx,y\n")); status != 400 || errCode(body) != "bad_upload" {
		t.Fatalf("bad header: %d %v", status, body)
	}

	// Keyset paging over the manufacturer's devices.
	seen := 0
	for after := ""; ; {
		status, page := s.call(acme, "GET", "/api/v1/devices?limit=50&after="+after, "", nil)
		if status != 200 {
			t.Fatalf("list: %d %v", status, page)
		}
		seen += len(page["devices"].([]any))
		next, _ := page["next"].(string)
		if next == "" {
			break
		}
		after = next
	}
	if seen != 201 {
		t.Fatalf("paged through %d devices, want 201", seen)
	}

	// Hand devices over to alice: acme no longer sees them, bob never does.
	if status, body := s.call(acme, "POST", "/api/v1/handovers", "application/json",
		mustJSON(map[string]any{"subscriber": "alice", "deviceIds": []string{"acme-0001", "acme-0002", "acme-cert-1"}})); status != 200 || body["handedOver"] != float64(3) {
		t.Fatalf("hand over: %d %v", status, body)
	}
	for _, who := range []string{acme, bob} {
		if status, body := s.call(who, "GET", "/api/v1/devices/acme-0001", "", nil); status != 404 || errCode(body) != "device_not_found" {
			t.Fatalf("another tenant's device: %d %v", status, body)
		}
	}
	if status, body := s.call(bob, "POST", "/api/v1/devices/acme-0001/enrolments", "application/json",
		mustJSON(map[string]any{"proof": map[string]any{"claimCode": "claim-0001"}})); status != 404 {
		t.Fatalf("bob enrols alice's device: %d %v", status, body)
	}

	// Proof by claim code: another device's code is refused, the right one
	// gives an untrusted bundle.
	if status, body := s.call(alice, "POST", "/api/v1/devices/acme-0001/enrolments", "application/json",
		mustJSON(map[string]any{"proof": map[string]any{"claimCode": "claim-0002"}})); status != 403 || errCode(body) != "wrong_claim_code" {
		t.Fatalf("another device's claim code: %d %v", status, body)
	}
	status, bundle := s.call(alice, "POST", "/api/v1/devices/acme-0001/enrolments", "application/json",
		mustJSON(map[string]any{"proof": map[string]any{"claimCode": "claim-0001"}}))
	if status != 201 || !strings.HasPrefix(bundle["assignedId"].(string), "S") || len(bundle["token"].(string)) < 43 ||
		!strings.HasPrefix(bundle["mefUri"].(string), "https://") || !strings.Contains(bundle["trustAnchor"].(string), "BEGIN CERTIFICATE") {
		t.Fatalf("bundle: %d %v", status, bundle)
	}
	status, detail := s.call(alice, "GET", "/api/v1/devices/acme-0001", "", nil)
	if status != 200 || detail["state"] != "token-issued" || detail["assignedId"] != bundle["assignedId"] {
		t.Fatalf("device after enrolment: %d %v", status, detail)
	}
	// Re-requesting keeps the assigned ID and issues a new token.
	_, again := s.call(alice, "POST", "/api/v1/devices/acme-0001/enrolments", "application/json",
		mustJSON(map[string]any{"proof": map[string]any{"claimCode": "claim-0001"}}))
	if again["assignedId"] != bundle["assignedId"] || again["token"] == bundle["token"] {
		t.Fatalf("re-request: %v vs %v", again, bundle)
	}

	// Proof by the device's certificate over a nonce; a nonce works once.
	status, n := s.call(alice, "POST", "/api/v1/devices/acme-cert-1/nonce", "", nil)
	if status != 200 {
		t.Fatalf("nonce: %d %v", status, n)
	}
	nonce := n["nonce"].(string)
	digest := sha256.Sum256([]byte(nonce))
	sig, _ := ecdsa.SignASN1(rand.Reader, devKey, digest[:])
	proof := mustJSON(map[string]any{"proof": map[string]any{"nonce": nonce, "signature": base64.StdEncoding.EncodeToString(sig)}})
	if status, body := s.call(alice, "POST", "/api/v1/devices/acme-cert-1/enrolments", "application/json", proof); status != 201 {
		t.Fatalf("nonce proof: %d %v", status, body)
	}
	if status, body := s.call(alice, "POST", "/api/v1/devices/acme-cert-1/enrolments", "application/json", proof); status != 403 || errCode(body) != "bad_nonce" {
		t.Fatalf("nonce replay: %d %v", status, body)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, n = s.call(alice, "POST", "/api/v1/devices/acme-cert-1/nonce", "", nil)
	digest = sha256.Sum256([]byte(n["nonce"].(string)))
	sig, _ = ecdsa.SignASN1(rand.Reader, other, digest[:])
	if status, body := s.call(alice, "POST", "/api/v1/devices/acme-cert-1/enrolments", "application/json",
		mustJSON(map[string]any{"proof": map[string]any{"nonce": n["nonce"], "signature": base64.StdEncoding.EncodeToString(sig)}})); status != 403 || errCode(body) != "bad_signature" {
		t.Fatalf("signature by another key: %d %v", status, body)
	}

	// OBF registry: only the sp-admin; a trusted OBS gets its client
	// certificate and nothing that can sign.
	obfKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	reg := map[string]any{"name": "line-1", "kind": "obs", "trusted": true, "owner": "alice", "clientCsr": csrPEM(t, obfKey)}
	if status, body := s.call(alice, "POST", "/api/v1/obfs", "application/json", mustJSON(reg)); status != 403 {
		t.Fatalf("subscriber registers an OBF: %d %v", status, body)
	}
	status, obs := s.call(admin, "POST", "/api/v1/obfs", "application/json", mustJSON(reg))
	if status != 201 || !strings.Contains(obs["clientCert"].(string), "BEGIN CERTIFICATE") || obs["subCaCert"] != nil {
		t.Fatalf("register OBS: %d %v", status, obs)
	}
	// A token for a trusted OBF carries no MEF URI or trust anchor.
	status, trusted := s.call(alice, "POST", "/api/v1/devices/acme-0001/enrolments", "application/json",
		mustJSON(map[string]any{"proof": map[string]any{"claimCode": "claim-0001"}, "obfId": obs["obfId"]}))
	if status != 201 || trusted["mefUri"] != nil || trusted["trustAnchor"] != nil {
		t.Fatalf("trusted bundle: %d %v", status, trusted)
	}
	if status, body := s.call(alice, "POST", "/api/v1/devices/acme-0001/enrolments", "application/json",
		mustJSON(map[string]any{"proof": map[string]any{"claimCode": "claim-0001"}, "obfId": "no-such-obf"})); status != 404 || errCode(body) != "unknown_obf" {
		t.Fatalf("unknown OBF: %d %v", status, body)
	}
	if status, body := s.call(alice, "POST", "/api/v1/devices/acme-0001/enrolments", "application/json",
		[]byte(`{"proof":{"claimCode":"claim-0001"},"obfIdentifier":"typo"}`)); status != 400 {
		t.Fatalf("unknown field: %d %v", status, body)
	}

	// Brute force: past the device's ceiling of five wrong codes the
	// guesser's next wrong one locks the guesser (here the owner herself),
	// who is then refused even the right code (docs/ownership.md).
	for i := 0; i < 6; i++ {
		s.call(alice, "POST", "/api/v1/devices/acme-0002/enrolments", "application/json",
			mustJSON(map[string]any{"proof": map[string]any{"claimCode": fmt.Sprintf("guess-%d", i)}}))
	}
	if status, body := s.call(alice, "POST", "/api/v1/devices/acme-0002/enrolments", "application/json",
		mustJSON(map[string]any{"proof": map[string]any{"claimCode": "claim-0002"}})); status != 429 || errCode(body) != "claim_locked" {
		t.Fatalf("after six wrong codes: %d %v", status, body)
	}

	// A revoked API key stops working at once.
	status, k := s.call(bob, "POST", "/api/v1/api-keys", "application/json", []byte(`{"name":"temp"}`))
	if status != 201 {
		t.Fatalf("new key: %d %v", status, k)
	}
	if status, _ := s.call(k["key"].(string), "POST", "/api/v1/api-keys/"+k["keyId"].(string)+"/revoke", "", nil); status != 200 {
		t.Fatalf("revoke key: %d", status)
	}
	if status, body := s.call(k["key"].(string), "GET", "/api/v1/devices", "", nil); status != 401 || errCode(body) != "bad_api_key" {
		t.Fatalf("revoked key: %d %v", status, body)
	}
	if status, body := s.call("", "GET", "/api/v1/devices", "", nil); status != 401 || errCode(body) != "unauthenticated" {
		t.Fatalf("no credentials: %d %v", status, body)
	}
}

func csrPEM(t *testing.T, key crypto.Signer) string {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "obf"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}
