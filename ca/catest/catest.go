// Package catest is a software CA for tests of the components that check
// certificate chains (the MAF API, the portal's TLS): root, issuing CA, and
// leaves on demand. The HSM-backed hierarchy is tested by package pki.
package catest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"net"
	"testing"
	"time"

	"github.com/credfactory/credfactory/ca"
)

// PKI is a root and an issuing CA with software keys.
type PKI struct {
	Root, Issuing *x509.Certificate
	RootKey       *ecdsa.PrivateKey
	IssuingKey    *ecdsa.PrivateKey
	CA            *ca.CA
}

// New makes a fresh hierarchy valid for a day.
func New(t testing.TB) *PKI {
	t.Helper()
	return NewAt(t, time.Now())
}

// NewAt makes a hierarchy valid for a day from now, so a test can issue a
// certificate that has already expired.
func NewAt(t testing.TB, now time.Time) *PKI {
	t.Helper()
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	issKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	root, err := ca.CreateRoot(rootKey, pkix.Name{CommonName: "test root"}, 24*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := ca.CreateIntermediate(root, rootKey, &issKey.PublicKey, pkix.Name{CommonName: "test issuing"}, 24*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ca.New(ca.Config{Issuer: iss, Signer: issKey, Chain: []*x509.Certificate{iss, root}})
	if err != nil {
		t.Fatal(err)
	}
	return &PKI{Root: root, Issuing: iss, RootKey: rootKey, IssuingKey: issKey, CA: c}
}

// Leaf issues req (its CSR made here for a fresh P-256 key) and returns it
// as a TLS identity with its chain.
func (p *PKI) Leaf(t testing.TB, req ca.Request) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	req.CSR = csr
	issued, err := p.CA.Issue(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{issued.DER, p.Issuing.Raw}, PrivateKey: key, Leaf: issued.Certificate}
}

// WithClock is the issuing CA with now as its clock, for tests that move
// time.
func (p *PKI) WithClock(t testing.TB, now func() time.Time) *ca.CA {
	t.Helper()
	c, err := ca.New(ca.Config{Issuer: p.Issuing, Signer: p.IssuingKey, Chain: []*x509.Certificate{p.Issuing, p.Root}, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// ServerCert is a TLS server identity for localhost and 127.0.0.1.
func (p *PKI) ServerCert(t testing.TB) tls.Certificate {
	return p.Leaf(t, ca.Request{Profile: ca.ProfileServer, DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}})
}
