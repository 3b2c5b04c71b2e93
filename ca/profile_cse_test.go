package ca

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"net/url"
	"strings"
	"testing"
)

// TestIssueUnderURIConstraints: an issuing CA made by CreateIssuingCA
// confines URI names to the SP domain (TS-0003 §10.1.1.5); AE-ID and CSE-ID
// certificates issued under it, linted, verify with Go and with openssl
// verify with the constraint in play, for the usages their profile grants
// (a CSE serves TLS for its public domain name), and a URI on another host
// does not.
func TestIssueUnderURIConstraints(t *testing.T) {
	p := newTestPKI(t)
	key := testKey(t, "p256-b")
	issuing, err := CreateIssuingCA(p.root, p.rootKey, key.Public(), pkix.Name{CommonName: "constrained issuing CA"}, 365*day, p.now, "sp.example")
	if err != nil {
		t.Fatal(err)
	}
	if len(issuing.PermittedURIDomains) != 1 || issuing.PermittedURIDomains[0] != "sp.example" || !issuing.PermittedDNSDomainsCritical {
		t.Fatalf("constraints %v critical %v", issuing.PermittedURIDomains, issuing.PermittedDNSDomainsCritical)
	}
	c, err := New(Config{Issuer: issuing, Signer: key, Chain: []*x509.Certificate{issuing, p.root}, Lint: true})
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(p.root)
	inters := x509.NewCertPool()
	inters.AddCert(issuing)
	u := func(s string) []*url.URL { return []*url.URL{mustURL(t, s)} }
	tests := []struct {
		name     string
		req      Request
		key      string
		purposes []string // openssl -purpose values that must verify
		dnsName  string   // Go's hostname check, for a server
		outside  bool     // a name outside the constraint: must not verify
	}{
		{"AE-ID", Request{Profile: ProfileDevice, AssignedID: "Sdevice1", URIs: u("https://sp.example/Sdevice1")}, "p256", []string{"sslclient"}, "", false},
		{"CSE-ID", Request{Profile: ProfileCSE, AssignedID: "/cse-1", URIs: u("https://sp.example/cse-1"), DNSNames: []string{"cse-1.sp.example"}},
			"p256", []string{"sslclient", "sslserver"}, "cse-1.sp.example", false},
		{"CSE-ID, RSA key", Request{Profile: ProfileCSE, AssignedID: "/cse-2", URIs: u("https://sp.example/cse-2"), DNSNames: []string{"cse-2.sp.example"}},
			"rsa2048", []string{"sslclient", "sslserver"}, "cse-2.sp.example", false},
		{"AE-ID on another host", Request{Profile: ProfileDevice, AssignedID: "Sdevice1", URIs: u("https://other.example/Sdevice1")}, "p256", []string{"sslclient"}, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.req.CSR = makeCSR(t, testKey(t, tt.key), &x509.CertificateRequest{})
			got, err := c.Issue(context.Background(), tt.req)
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			leaf := got.Certificate
			usages := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
			if tt.dnsName != "" {
				usages = append(usages, x509.ExtKeyUsageServerAuth)
			}
			for _, usage := range usages {
				_, verr := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, DNSName: tt.dnsName,
					KeyUsages: []x509.ExtKeyUsage{usage}})
				if (verr == nil) == tt.outside {
					t.Errorf("Go Verify for %v: %v (outside the constraint: %v)", usage, verr, tt.outside)
				}
			}
			for _, purpose := range tt.purposes {
				out, oerr := opensslVerify(t, p.root, got.Chain, leaf, purpose)
				switch {
				case !tt.outside && oerr != nil:
					t.Errorf("openssl verify -purpose %s: %v\n%s", purpose, oerr, out)
				case tt.outside && (oerr == nil || !strings.Contains(out, "permitted subtree violation")):
					t.Errorf("openssl verify -purpose %s accepted a URI outside the constraint: %v\n%s", purpose, oerr, out)
				}
			}
		})
	}
}

// TestDeviceProfilesUseTheDirectEncoder: the certificates Issue makes for
// AE-IDs and CSE-IDs (the EST hot path) are shapes encodeLeafTBS covers, so
// they never take the CreateCertificate fallback: rebuilt from the issued
// certificate, the template encodes directly to exactly its TBS.
func TestDeviceProfilesUseTheDirectEncoder(t *testing.T) {
	p := newTestPKI(t)
	c := p.newCA(t, func(cfg *Config) {
		cfg.Lint = true
		cfg.CRLURL = "http://status.sp.example/ca/v1/crl/issuing.crl"
		cfg.OCSPURL = "http://status.sp.example/ocsp"
	})
	alg, err := signatureAlgorithmFor(p.inter.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	u := func(s string) []*url.URL { return []*url.URL{mustURL(t, s)} }
	for _, tt := range []struct {
		name string
		key  string
		req  Request
	}{
		{"AE-ID", "p256", Request{Profile: ProfileDevice, AssignedID: "Sdevice1", URIs: u("https://sp.example/Sdevice1")}},
		{"CSE-ID", "p256", Request{Profile: ProfileCSE, AssignedID: "/cse-1", URIs: u("https://sp.example/cse-1"), DNSNames: []string{"cse-1.sp.example"}}},
		{"CSE-ID, RSA", "rsa2048", Request{Profile: ProfileCSE, AssignedID: "/cse-1", URIs: u("https://sp.example/cse-1"), DNSNames: []string{"cse-1.sp.example"}}},
	} {
		key := testKey(t, tt.key)
		tt.req.CSR = makeCSR(t, key, &x509.CertificateRequest{})
		got, err := c.Issue(context.Background(), tt.req)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		cert := got.Certificate
		tmpl := &x509.Certificate{SerialNumber: cert.SerialNumber, Subject: pkix.Name{CommonName: cert.Subject.CommonName},
			NotBefore: cert.NotBefore, NotAfter: cert.NotAfter, KeyUsage: cert.KeyUsage, ExtKeyUsage: cert.ExtKeyUsage,
			BasicConstraintsValid: true, SubjectKeyId: cert.SubjectKeyId, DNSNames: cert.DNSNames, URIs: cert.URIs,
			CRLDistributionPoints: cert.CRLDistributionPoints, OCSPServer: cert.OCSPServer}
		tbs, ok := encodeLeafTBS(tmpl, p.inter.RawSubject, p.inter.SubjectKeyId, alg.algID, key.Public())
		if !ok || string(tbs) != string(cert.RawTBSCertificate) {
			t.Errorf("%s: direct encoding ok=%v, equal to the issued TBS: %v", tt.name, ok, string(tbs) == string(cert.RawTBSCertificate))
		}
	}
}
