package bench

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"math/big"
	"strconv"
	"testing"
	"time"

	"github.com/credfactory/credfactory/kdf"
)

func TestVerifyChainsRefusesAStranger(t *testing.T) {
	cert := func(name string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, isCA bool) (*x509.Certificate, *ecdsa.PrivateKey) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			BasicConstraintsValid: true, IsCA: isCA, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign}
		if parent == nil {
			parent, parentKey = tmpl, key
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return c, key
	}
	root, rootKey := cert("root", nil, nil, true)
	issuing, issuingKey := cert("issuing", root, rootKey, true)
	leaf, _ := cert("device", issuing, issuingKey, false)
	stranger, _ := cert("stranger", nil, nil, false)

	var l ledger
	l.intermediates(issuing)
	l.cert(leaf.Raw)
	if n, err := l.verifyChains([]*x509.Certificate{root}); err != nil || n != 1 {
		t.Fatalf("a good chain: %d, %v", n, err)
	}
	l.cert(stranger.Raw)
	if _, err := l.verifyChains([]*x509.Certificate{root}); err == nil {
		t.Fatal("a certificate from another CA passed")
	}
}

// TestReconcile: the registry and what the bench received must agree both
// ways; each disagreement is named.
func TestReconcile(t *testing.T) {
	der := []byte("a certificate")
	fp := sha256.Sum256(der)
	certID := kdf.CredentialID(kdf.CredentialDeviceCert, hex.EncodeToString(fp[:]))
	cert := credential{ID: certID, Type: "x509", Status: "active"}
	key := credential{ID: "key-1", Type: "psk", Status: "active"}
	tests := []struct {
		name         string
		certs, keys  bool // what the ledger holds
		creds        [][]credential
		wantDoubles  int
		wantProblems int
	}{
		{"agree", true, true, [][]credential{{cert}, {key}}, 0, 0},
		{"two credentials on a device", true, true, [][]credential{{cert, key}}, 1, 3},
		{"revoked only", true, false, [][]credential{{{ID: certID, Type: "x509", Status: "revoked"}}}, 1, 2},
		{"registry holds what the bench never got", false, false, [][]credential{{cert}, {key}}, 0, 2},
		{"bench got what the registry lacks", true, true, [][]credential{}, 0, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l ledger
			if tt.certs {
				l.cert(der)
			}
			if tt.keys {
				l.key("key-1")
			}
			ids := make([]string, len(tt.creds))
			for i := range ids {
				ids[i] = "bench-" + strconv.Itoa(i)
			}
			rec := l.reconcile(ids, tt.creds)
			if rec.doubles != tt.wantDoubles || len(rec.problems) != tt.wantProblems {
				t.Errorf("doubles %d, problems %q; want %d doubles, %d problems", rec.doubles, rec.problems, tt.wantDoubles, tt.wantProblems)
			}
		})
	}
}
