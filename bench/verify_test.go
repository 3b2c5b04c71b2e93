package bench

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"
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
