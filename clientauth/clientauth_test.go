package clientauth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"testing"
	"time"
)

type node struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// issue certifies a fresh key under parent (nil: self-signed root).
func issue(t *testing.T, parent *node, tmpl *x509.Certificate) *node {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl.SerialNumber, _ = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	tmpl.BasicConstraintsValid = true
	signer, issuer := key, tmpl
	if parent != nil {
		signer, issuer = parent.key, parent.cert
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &node{c, key}
}

// TestVerify: only a leaf chaining through a configured intermediate, for
// client authentication, is a peer; a CA certificate presented as a client
// certificate is refused even where its chain and usage would verify.
func TestVerify(t *testing.T) {
	caKU := x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	clientEKU := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	root := issue(t, nil, &x509.Certificate{Subject: pkix.Name{CommonName: "root"}, IsCA: true, KeyUsage: caKU})
	inter := issue(t, root, &x509.Certificate{Subject: pkix.Name{CommonName: "obf ca"}, IsCA: true, KeyUsage: caKU, ExtKeyUsage: clientEKU, MaxPathLen: 1})
	other := issue(t, root, &x509.Certificate{Subject: pkix.Name{CommonName: "not configured"}, IsCA: true, KeyUsage: caKU})
	u, _ := url.Parse("urn:uuid:obf-1")
	leaf := issue(t, inter, &x509.Certificate{Subject: pkix.Name{CommonName: "obf-1"}, URIs: []*url.URL{u}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: clientEKU})
	subCA := issue(t, inter, &x509.Certificate{Subject: pkix.Name{CommonName: "sub-ca"}, IsCA: true, KeyUsage: caKU, ExtKeyUsage: clientEKU, MaxPathLen: 0, MaxPathLenZero: true})
	server := issue(t, inter, &x509.Certificate{Subject: pkix.Name{CommonName: "srv"}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	elsewhere := issue(t, other, &x509.Certificate{Subject: pkix.Name{CommonName: "x"}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: clientEKU})
	v := New([]*x509.Certificate{root.cert}, []*x509.Certificate{inter.cert})
	state := func(chain ...*node) *tls.ConnectionState {
		s := &tls.ConnectionState{}
		for _, n := range chain {
			s.PeerCertificates = append(s.PeerCertificates, n.cert)
		}
		return s
	}
	for _, c := range []struct {
		name  string
		state *tls.ConnectionState
		want  error
	}{
		{"OBF client certificate", state(leaf, inter), nil},
		{"no certificate", state(), ErrNoCertificate},
		{"a sub-CA certificate as the client's", state(subCA, inter), ErrUntrusted},
		{"the intermediate itself", state(inter), ErrUntrusted},
		{"a server certificate", state(server, inter), ErrUntrusted},
		{"through an intermediate the client brings", state(elsewhere, other), ErrUntrusted},
	} {
		p, err := v.Verify(c.state)
		if !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
		if err == nil && (len(p.Names) != 1 || p.Names[0] != "urn:uuid:obf-1") {
			t.Errorf("%s: names %v", c.name, p.Names)
		}
	}
}

// TestNamesOfAnAEIDCertificate: a device certificate's https URI names the
// peer both as the URI and as the oneM2M absolute ID it carries; other
// URIs and DNS names are named as they are.
func TestNamesOfAnAEIDCertificate(t *testing.T) {
	caKU := x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	clientEKU := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	root := issue(t, nil, &x509.Certificate{Subject: pkix.Name{CommonName: "root"}, IsCA: true, KeyUsage: caKU})
	inter := issue(t, root, &x509.Certificate{Subject: pkix.Name{CommonName: "issuing"}, IsCA: true, KeyUsage: caKU, MaxPathLen: 0, MaxPathLenZero: true})
	v := New([]*x509.Certificate{root.cert}, []*x509.Certificate{inter.cert})
	for _, c := range []struct {
		name string
		uris []string
		dns  []string
		want []string
	}{
		{"AE-ID", []string{"https://sp.example/Sdev1"}, nil, []string{"https://sp.example/Sdev1", "//sp.example/Sdev1"}},
		{"CSE-ID", []string{"https://sp.example/cse-1"}, []string{"cse-1.sp.example"}, []string{"https://sp.example/cse-1", "//sp.example/cse-1", "cse-1.sp.example"}},
		{"legacy AE-ID", []string{"//sp.example/Sdev1"}, nil, []string{"//sp.example/Sdev1"}},
		{"another scheme", []string{"spiffe://sp.example/ops"}, nil, []string{"spiffe://sp.example/ops"}},
		{"https without a path", []string{"https://sp.example"}, nil, []string{"https://sp.example"}},
	} {
		var uris []*url.URL
		for _, s := range c.uris {
			u, _ := url.Parse(s)
			uris = append(uris, u)
		}
		leaf := issue(t, inter, &x509.Certificate{Subject: pkix.Name{CommonName: c.name}, URIs: uris, DNSNames: c.dns,
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: clientEKU})
		p, err := v.Verify(&tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf.cert, inter.cert}})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if fmt.Sprint(p.Names) != fmt.Sprint(c.want) {
			t.Errorf("%s: names %v, want %v", c.name, p.Names, c.want)
		}
	}
}
