package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/credfactory/credfactory/client"
)

// TestTrustedPathHardening: what a trusted OBS may not get recorded, and
// what stops working once an account or an OBF is disabled.
func TestTrustedPathHardening(t *testing.T) {
	s := newSeed(t)
	ctx := context.Background()
	line := s.obfConn(s.lineT, s.lineTKey)
	b1 := s.bundle("dev-1", s.lineT)
	b2 := s.bundle("dev-2", s.lineT)

	// A CSR that asks for another device's URI is refused: the SP names
	// the certificate after the token's assigned ID only.
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse("https://sp.example/" + b2.AssignedID)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: b1.AssignedID}, URIs: []*url.URL{u}}, other)
	asks := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	res, err := line.Forward(ctx, []client.ForwardItem{{Token: b1.Token, AssignedID: b1.AssignedID, CSR: asks}})
	if err != nil || res[0].Code != "csr_san_mismatch" {
		t.Fatalf("CSR naming another device: %v %+v", err, res)
	}

	// Recorded once; the same CSR again is a replay with the same
	// certificate, another key with the same token is refused.
	first := deviceCSR(t, b1.AssignedID)
	got, err := line.Forward(ctx, []client.ForwardItem{{Token: b1.Token, AssignedID: b1.AssignedID, CSR: first}})
	if err != nil || got[0].Status != "recorded" {
		t.Fatalf("first CSR: %v %+v", err, got)
	}
	if res, err := line.Forward(ctx, []client.ForwardItem{{Token: b1.Token, AssignedID: b1.AssignedID, CSR: first}}); err != nil || res[0].Status != "replayed" || res[0].Certificate != got[0].Certificate {
		t.Fatalf("the same CSR again: %v %+v", err, res)
	}
	if res, err := line.Forward(ctx, []client.ForwardItem{{Token: b1.Token, AssignedID: b1.AssignedID, CSR: deviceCSR(t, b1.AssignedID)}}); err != nil || res[0].Code != "token_redeemed" {
		t.Fatalf("another key with a used token: %v %+v", err, res)
	}

	// Hand-over moves only pre-enrolled devices.
	acme := strings.TrimSpace(s.cli("admin", "create-api-key", "--stakeholder", "acme"))
	s.call(acme, "POST", "/api/v1/devices", "text/csv", []byte("deviceId,claimCode\nkeep-1,label-keep\n"))
	if status, body := s.call(acme, "POST", "/api/v1/devices/keep-1/enrolments", "application/json", []byte(`{"proof":{"claimCode":"label-keep"}}`)); status != 201 {
		t.Fatalf("manufacturer token: %d %v", status, body)
	}
	if status, body := s.call(acme, "POST", "/api/v1/handovers", "application/json", mustJSON(map[string]any{"subscriber": "alice", "deviceIds": []string{"keep-1"}})); status != 200 || body["handedOver"] != float64(0) {
		t.Fatalf("a device with an open token was handed over: %d %v", status, body)
	}

	// A disabled OBF can no longer forward; a disabled account's key stops.
	admin := strings.TrimSpace(s.cli("admin", "create-api-key", "--stakeholder", "admin"))
	if status, body := s.call(admin, "POST", "/api/v1/obfs/"+s.lineT["obfId"].(string)+"/disable", "", nil); status != 200 {
		t.Fatalf("disable OBF: %d %v", status, body)
	}
	if _, err := line.Forward(ctx, []client.ForwardItem{{Token: b2.Token, AssignedID: b2.AssignedID, CSR: deviceCSR(t, b2.AssignedID)}}); !isCode(err, "not_a_trusted_obf") {
		t.Fatalf("forward from a disabled OBF: %v", err)
	}
	s.cli("admin", "disable-stakeholder", "--name", "alice")
	if status, body := s.call(s.alice, "GET", "/api/v1/devices", "", nil); status != 401 || errCode(body) != "stakeholder_disabled" {
		t.Fatalf("API key of a disabled stakeholder: %d %v", status, body)
	}
}

func issueWithKey(t *testing.T, sub *x509.Certificate, subKey *ecdsa.PrivateKey, assignedID string, key *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	return sign(t, sub, subKey, &x509.Certificate{Subject: pkix.Name{CommonName: assignedID},
		URIs: []*url.URL{{Host: "sp.example", Path: "/" + assignedID}}}, key)
}

// sign certifies key as tmpl says with the OBS's sub-CA; with sub nil the
// certificate is self-signed (as a rogue line would make).
func sign(t *testing.T, sub *x509.Certificate, subKey *ecdsa.PrivateKey, tmpl *x509.Certificate, key *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	tmpl.SerialNumber, _ = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Minute), time.Now().Add(24*time.Hour)
	tmpl.KeyUsage, tmpl.ExtKeyUsage = x509.KeyUsageDigitalSignature, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	parent, signer := sub, any(subKey)
	if sub == nil {
		parent, signer = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func selfSigned(t *testing.T, assignedID string, key *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	return sign(t, nil, nil, &x509.Certificate{Subject: pkix.Name{CommonName: assignedID},
		URIs: []*url.URL{{Host: "sp.example", Path: "/" + assignedID}}}, key)
}
