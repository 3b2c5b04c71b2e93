package ca

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/url"
	"testing"
	"time"
)

// TestEncodeLeafTBS: the direct encoding is byte for byte what
// x509.CreateCertificate writes, for every shape of end-entity template the
// profiles produce and the edges of DER (serials with the top bit set,
// validity past 2049, key usages spanning two bytes, IPv4 and IPv6, every
// optional extension on and off), with issuers of each key type; and
// templates it does not cover fall back rather than encode.
func TestEncodeLeafTBS(t *testing.T) {
	p := newTestPKI(t)
	sub := testKey(t, "p256-b")
	ski, _ := subjectKeyID(sub.Public())
	now := time.Date(2026, 12, 6, 17, 0, 0, 123456789, time.UTC)
	base := func() *x509.Certificate {
		return &x509.Certificate{
			SerialNumber: big.NewInt(0x7f01), Subject: pkix.Name{CommonName: "Sdevice1"},
			NotBefore: now, NotAfter: now.Add(365 * day),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			BasicConstraintsValid: true, SubjectKeyId: ski,
			URIs: []*url.URL{mustURL(t, "https://sp.example/Sdevice1")},
		}
	}
	topBit, _ := new(big.Int).SetString("80"+"ff00ff00ff00ff00ff00ff00ff00ff00ff00ff", 16)
	cases := []struct {
		name string
		mod  func(*x509.Certificate)
	}{
		{"device", func(*x509.Certificate) {}},
		{"device with CRL and OCSP", func(c *x509.Certificate) {
			c.CRLDistributionPoints = []string{"http://status.sp.example:8080/ca/v1/crl/issuing.crl"}
			c.OCSPServer = []string{"http://status.sp.example:8080/ocsp"}
		}},
		{"serial with the top bit set", func(c *x509.Certificate) { c.SerialNumber = topBit }},
		{"validity past 2049", func(c *x509.Certificate) { c.NotAfter = time.Date(2051, 1, 2, 3, 4, 5, 0, time.UTC) }},
		{"server names", func(c *x509.Certificate) {
			c.URIs = nil
			c.Subject = pkix.Name{CommonName: "localhost", Organization: []string{"SP Example"}}
			c.DNSNames = []string{"localhost", "mef.sp.example"}
			c.IPAddresses = []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}
			c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
			c.KeyUsage |= x509.KeyUsageKeyEncipherment
		}},
		{"key usage in two bytes", func(c *x509.Certificate) { c.KeyUsage |= x509.KeyUsageDecipherOnly }},
		{"no EKU", func(c *x509.Certificate) { c.ExtKeyUsage = nil }},
		{"legacy scheme-less device URI", func(c *x509.Certificate) { c.URIs = []*url.URL{mustURL(t, "//sp.example/Sdevice1")} }},
		{"CSE: public domain name, full URI, serverAuth and clientAuth", func(c *x509.Certificate) {
			c.Subject = pkix.Name{CommonName: "/cse-1"}
			c.DNSNames = []string{"cse-1.sp.example"}
			c.URIs = []*url.URL{mustURL(t, "https://sp.example/cse-1")}
			c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
			c.CRLDistributionPoints = []string{"http://status.sp.example:8080/ca/v1/crl/issuing.crl"}
			c.OCSPServer = []string{"http://status.sp.example:8080/ocsp"}
		}},
		{"CSE with an RSA key", func(c *x509.Certificate) {
			c.Subject = pkix.Name{CommonName: "/cse-1"}
			c.DNSNames = []string{"cse-1.sp.example"}
			c.URIs = []*url.URL{mustURL(t, "https://sp.example/cse-1")}
			c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
			c.KeyUsage |= x509.KeyUsageKeyEncipherment
		}},
		{"several URIs", func(c *x509.Certificate) {
			c.URIs = append(c.URIs, mustURL(t, "https://other.example/x?y=1"))
		}},
	}
	for _, kind := range []string{"p256", "p384", "rsa2048", "ed25519"} {
		key := testKey(t, kind)
		inter, err := CreateIntermediate(p.root, p.rootKey, key.Public(), pkix.Name{CommonName: "issuer " + kind}, 365*day, p.now)
		if err != nil {
			t.Fatal(err)
		}
		alg, err := signatureAlgorithmFor(inter.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		b, err := newTBSBuilder(inter, alg)
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range cases {
			tmpl := base()
			tc.mod(tmpl)
			want, err := b.buildWithGo(tmpl, sub.Public())
			if err != nil {
				t.Fatalf("%s/%s: CreateCertificate: %v", kind, tc.name, err)
			}
			got, ok := encodeLeafTBS(tmpl, b.parent.RawSubject, b.parent.SubjectKeyId, alg.algID, sub.Public())
			if !ok || !bytes.Equal(got, want) {
				t.Errorf("%s/%s: ok=%v\n got %x\nwant %x", kind, tc.name, ok, got, want)
			}
		}
	}

	// Not covered: each of these must fall back to CreateCertificate.
	for name, mod := range map[string]func(*x509.Certificate){
		"CA":               func(c *x509.Certificate) { c.IsCA = true },
		"name constraints": func(c *x509.Certificate) { c.PermittedDNSDomains = []string{"sp.example"} },
		"e-mail name":      func(c *x509.Certificate) { c.EmailAddresses = []string{"a@b.example"} },
		"empty subject":    func(c *x509.Certificate) { c.Subject = pkix.Name{} },
		"unknown EKU":      func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning} },
		"no SKI":           func(c *x509.Certificate) { c.SubjectKeyId = nil },
		"issuer URL":       func(c *x509.Certificate) { c.IssuingCertificateURL = []string{"http://x.example/ca.crt"} },
	} {
		tmpl := base()
		mod(tmpl)
		if _, ok := encodeLeafTBS(tmpl, p.inter.RawSubject, p.inter.SubjectKeyId, []byte{0x30, 0}, sub.Public()); ok {
			t.Errorf("%s: encoded directly, want the CreateCertificate fallback", name)
		}
	}
}
