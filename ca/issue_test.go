package ca

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"net"
	"net/url"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	zx509 "github.com/zmap/zcrypto/x509"
	"github.com/zmap/zlint/v3"
	"github.com/zmap/zlint/v3/lint"
)

// TestIssueChainVerifies issues through root -> intermediate -> leaf and
// checks both Go and OpenSSL accept the chain for the intended purpose, for
// every supported subject key type, with and without pre-issuance linting.
func TestIssueChainVerifies(t *testing.T) {
	p := newTestPKI(t)
	const crlURL, ocspURL = "http://ca.sp.example/ca/v1/crl/issuing.crl", "http://ca.sp.example/ocsp"

	tests := []struct {
		name    string
		profile Profile
		key     string
		wantKU  x509.KeyUsage
	}{
		{"device p256", ProfileDevice, "p256-b", x509.KeyUsageDigitalSignature},
		{"device p384", ProfileDevice, "p384", x509.KeyUsageDigitalSignature},
		{"device rsa2048", ProfileDevice, "rsa2048", x509.KeyUsageDigitalSignature},
		{"device rsa4096", ProfileDevice, "rsa4096", x509.KeyUsageDigitalSignature},
		{"device ed25519", ProfileDevice, "ed25519", x509.KeyUsageDigitalSignature},
		{"server p256", ProfileServer, "p256-b", x509.KeyUsageDigitalSignature},
		{"server rsa2048", ProfileServer, "rsa2048", x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment},
		{"obf client p256", ProfileOBFClient, "p256-b", x509.KeyUsageDigitalSignature},
	}
	for _, lint := range []bool{false, true} {
		c := p.newCA(t, func(cfg *Config) {
			cfg.Lint = lint
			cfg.CRLURL, cfg.OCSPURL = crlURL, ocspURL
		})
		for _, tt := range tests {
			name := tt.name
			if lint {
				name += " lint"
			}
			t.Run(name, func(t *testing.T) {
				key := testKey(t, tt.key)
				req := Request{CSR: makeCSR(t, key, nil), Profile: tt.profile}
				eku, purpose := x509.ExtKeyUsageClientAuth, "sslclient"
				switch tt.profile {
				case ProfileDevice:
					req.AssignedID = "Sdevice1"
					req.URIs = []*url.URL{mustURL(t, "https://sp.example/Sdevice1")}
				case ProfileServer:
					req.DNSNames = []string{"mef.sp.example", "MAF.sp.example"}
					req.IPAddresses = []net.IP{net.ParseIP("192.0.2.10")}
					eku, purpose = x509.ExtKeyUsageServerAuth, "sslserver"
				case ProfileOBFClient:
					req.AssignedID = "obs-1"
					req.URIs = []*url.URL{mustURL(t, "https://obs-1.factory.example/")}
				}
				got, err := c.Issue(context.Background(), req)
				if err != nil {
					t.Fatalf("Issue: %v", err)
				}
				leaf := got.Certificate
				if !bytes.Equal(leaf.Raw, got.DER) {
					t.Error("Issued.DER differs from Issued.Certificate.Raw")
				}
				if len(got.Chain) != 1 || !got.Chain[0].Equal(p.inter) {
					t.Errorf("chain = %d certs, want [intermediate] (root excluded)", len(got.Chain))
				}

				roots := x509.NewCertPool()
				roots.AddCert(p.root)
				inters := x509.NewCertPool()
				for _, ic := range got.Chain {
					inters.AddCert(ic)
				}
				if _, err := leaf.Verify(x509.VerifyOptions{
					Roots: roots, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{eku},
				}); err != nil {
					t.Errorf("Go Verify: %v", err)
				}
				// The other TLS purpose must not verify: the profile
				// grants exactly one.
				other := x509.ExtKeyUsageServerAuth
				if eku == x509.ExtKeyUsageServerAuth {
					other = x509.ExtKeyUsageClientAuth
				}
				if _, err := leaf.Verify(x509.VerifyOptions{
					Roots: roots, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{other},
				}); err == nil {
					t.Errorf("Go Verify accepted EKU %v, which the profile does not grant", other)
				}

				if leaf.KeyUsage != tt.wantKU {
					t.Errorf("KeyUsage = %v, want %v", leaf.KeyUsage, tt.wantKU)
				}
				if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{eku}) {
					t.Errorf("ExtKeyUsage = %v, want [%v]", leaf.ExtKeyUsage, eku)
				}
				if leaf.IsCA {
					t.Error("leaf is a CA")
				}
				if !bytes.Equal(leaf.AuthorityKeyId, p.inter.SubjectKeyId) {
					t.Error("AKI is not the issuer's SKI")
				}
				wantSKI, err := subjectKeyID(key.Public())
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(leaf.SubjectKeyId, wantSKI) {
					t.Errorf("SKI = %x, want %x", leaf.SubjectKeyId, wantSKI)
				}
				// Status pointers only where the registry can answer:
				// devices and OBF client certificates.
				wantCRL, wantOCSP := []string(nil), []string(nil)
				if tt.profile == ProfileDevice || tt.profile == ProfileOBFClient {
					wantCRL, wantOCSP = []string{crlURL}, []string{ocspURL}
				}
				if !slices.Equal(leaf.CRLDistributionPoints, wantCRL) || !slices.Equal(leaf.OCSPServer, wantOCSP) {
					t.Errorf("CRL DP %v, OCSP %v, want %v, %v", leaf.CRLDistributionPoints, leaf.OCSPServer, wantCRL, wantOCSP)
				}
				if want := p.now.Add(-time.Minute).Truncate(time.Second); !leaf.NotBefore.Equal(want) {
					t.Errorf("NotBefore = %v, want %v", leaf.NotBefore, want)
				}

				// Last, an independent verifier: it skips without openssl
				// (fails under CI), and everything above has run by then.
				if out, err := opensslVerify(t, p.root, got.Chain, leaf, ""); err != nil {
					t.Errorf("openssl verify: %v\n%s", err, out)
				}
				if out, err := opensslVerify(t, p.root, got.Chain, leaf, purpose); err != nil {
					t.Errorf("openssl verify -purpose %s: %v\n%s", purpose, err, out)
				}
			})
		}
	}
}

// TestIssueProfileDecides asks for everything a CSR can ask for and checks
// the certificate carries only what the profile says.
func TestIssueProfileDecides(t *testing.T) {
	p := newTestPKI(t)
	c := p.newCA(t, func(cfg *Config) { cfg.Lint = true })
	key := testKey(t, "p256-b")

	greedy := &x509.CertificateRequest{
		Subject:        pkixName("root-of-all-evil", "Evil Corp"),
		DNSNames:       []string{"*.sp.example", "mef.sp.example"},
		IPAddresses:    []net.IP{net.ParseIP("10.0.0.1")},
		EmailAddresses: []string{"admin@sp.example"},
		URIs:           []*url.URL{mustURL(t, "https://sp.example/Sadmin")},
		ExtraExtensions: []pkixExtension{
			basicConstraintsCA(t),
			keyUsageExt(t, x509.KeyUsageCertSign|x509.KeyUsageCRLSign),
			extKeyUsageExt(t),
		},
	}
	csr := makeCSR(t, key, greedy)

	tests := []struct {
		name     string
		req      Request
		wantCN   string
		wantDNS  []string
		wantIPs  int
		wantURIs []string
		wantEKU  []x509.ExtKeyUsage
		validity time.Duration
	}{
		{
			name:     "device",
			req:      Request{CSR: csr, Profile: ProfileDevice, AssignedID: "Sdevice1", URIs: []*url.URL{mustURL(t, "https://sp.example/Sdevice1")}},
			wantCN:   "Sdevice1",
			wantURIs: []string{"https://sp.example/Sdevice1"},
			wantEKU:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			validity: DefaultDeviceValidity,
		},
		{
			name:     "server",
			req:      Request{CSR: csr, Profile: ProfileServer, DNSNames: []string{"maf.sp.example"}},
			wantCN:   "maf.sp.example",
			wantDNS:  []string{"maf.sp.example"},
			wantEKU:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			validity: DefaultServerValidity,
		},
		{
			name:     "server shorter validity",
			req:      Request{CSR: csr, Profile: ProfileServer, DNSNames: []string{"maf.sp.example"}, Validity: 7 * day},
			wantCN:   "maf.sp.example",
			wantDNS:  []string{"maf.sp.example"},
			wantEKU:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			validity: 7 * day,
		},
		{
			name:     "obf client",
			req:      Request{CSR: csr, Profile: ProfileOBFClient, AssignedID: "obs-1", DNSNames: []string{"obs-1.factory.example"}},
			wantCN:   "obs-1",
			wantDNS:  []string{"obs-1.factory.example"},
			wantEKU:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			validity: DefaultOBFValidity,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := c.Issue(context.Background(), tt.req)
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			leaf := got.Certificate
			if leaf.Subject.CommonName != tt.wantCN || len(leaf.Subject.Organization) != 0 {
				t.Errorf("subject = %q, want CN=%s only", leaf.Subject.String(), tt.wantCN)
			}
			if !slices.Equal(leaf.DNSNames, tt.wantDNS) {
				t.Errorf("DNSNames = %v, want %v", leaf.DNSNames, tt.wantDNS)
			}
			if len(leaf.IPAddresses) != tt.wantIPs || len(leaf.EmailAddresses) != 0 {
				t.Errorf("IPs %v, emails %v: want none from the CSR", leaf.IPAddresses, leaf.EmailAddresses)
			}
			var uris []string
			for _, u := range leaf.URIs {
				uris = append(uris, u.String())
			}
			if !slices.Equal(uris, tt.wantURIs) {
				t.Errorf("URIs = %v, want %v", uris, tt.wantURIs)
			}
			if leaf.IsCA || leaf.KeyUsage&x509.KeyUsageCertSign != 0 {
				t.Error("CSR's CA:true / keyCertSign leaked into the certificate")
			}
			if !slices.Equal(leaf.ExtKeyUsage, tt.wantEKU) {
				t.Errorf("EKU = %v, want %v", leaf.ExtKeyUsage, tt.wantEKU)
			}
			if got := leaf.NotAfter.Sub(p.now.Truncate(time.Second)); got != tt.validity {
				t.Errorf("NotAfter - now = %v, want %v", got, tt.validity)
			}
			for _, ext := range leaf.Extensions {
				if ext.Id.Equal(oidBasicConstraints) && ext.Critical != true {
					t.Error("basicConstraints not critical")
				}
			}
		})
	}
}

// TestIssueRequestPolicy covers requests the profiles refuse.
func TestIssueRequestPolicy(t *testing.T) {
	p := newTestPKI(t)
	c := p.newCA(t, nil)
	csr := makeCSR(t, testKey(t, "p256-b"), nil)
	u := func(s string) []*url.URL { return []*url.URL{mustURL(t, s)} }
	many := make([]string, 101)
	for i := range many {
		many[i] = "h" + strings.Repeat("x", i%10) + ".sp.example"
	}

	tests := []struct {
		name string
		req  Request
		want string // substring of the reason
	}{
		{"no profile", Request{}, "no profile"},
		{"unknown profile", Request{Profile: "ca"}, "unknown profile"},
		{"device no URI", Request{Profile: ProfileDevice, AssignedID: "Sdevice1"}, "exactly one URI"},
		{"device two URIs", Request{Profile: ProfileDevice, AssignedID: "Sdevice1", URIs: append(u("https://sp.example/Sdevice1"), u("https://sp.example/Sdevice2")...)}, "exactly one URI"},
		{"device wildcard URI", Request{Profile: ProfileDevice, AssignedID: "Sdevice1", URIs: u("//*.sp.example/Sdevice1")}, "wildcard"},
		{"device wildcard path", Request{Profile: ProfileDevice, AssignedID: "S*", URIs: u("https://sp.example/S*")}, "wildcard"},
		{"device empty URI", Request{Profile: ProfileDevice, AssignedID: "Sdevice1", URIs: []*url.URL{{}}}, "empty"},
		{"device nil URI", Request{Profile: ProfileDevice, AssignedID: "Sdevice1", URIs: []*url.URL{nil}}, "nil"},
		{"device relative URI", Request{Profile: ProfileDevice, AssignedID: "Sdevice1", URIs: u("Sdevice1")}, "no scheme"},
		{"device oneM2M scheme-less absolute ID", Request{Profile: ProfileDevice, AssignedID: "Sdevice1", URIs: u("//sp.example/Sdevice1")}, "no scheme"},
		{"device URN without host", Request{Profile: ProfileDevice, AssignedID: "Sdevice1", URIs: u("urn:x-sp:Sdevice1")}, "no host"},
		{"cse without DNS name", Request{Profile: ProfileCSE, AssignedID: "/cse-1", URIs: u("https://sp.example/cse-1")}, "exactly one DNS SAN"},
		{"cse with an AE-ID", Request{Profile: ProfileCSE, AssignedID: "Sdevice1", URIs: u("https://sp.example/Sdevice1"), DNSNames: []string{"sdevice1.sp.example"}}, "needs a CSE-ID"},
		{"cse wildcard DNS", Request{Profile: ProfileCSE, AssignedID: "/cse-1", URIs: u("https://sp.example/cse-1"), DNSNames: []string{"*.sp.example"}}, "wildcard"},
		{"cse IP", Request{Profile: ProfileCSE, AssignedID: "/cse-1", URIs: u("https://sp.example/cse-1"), DNSNames: []string{"cse-1.sp.example"}, IPAddresses: []net.IP{net.ParseIP("192.0.2.1")}}, "no DNS or IP"},
		{"device URI names other ID", Request{Profile: ProfileDevice, AssignedID: "Sdevice1", URIs: u("https://sp.example/XSdevice1")}, "does not identify"},
		{"device URI with credentials", Request{Profile: ProfileDevice, AssignedID: "Sdevice1", URIs: u("https://user:pw@sp.example/Sdevice1")}, "user information"},
		{"device no assigned ID", Request{Profile: ProfileDevice, URIs: u("https://sp.example/Sdevice1")}, "assigned ID is empty"},
		{"device 65-char ID", Request{Profile: ProfileDevice, AssignedID: "S" + strings.Repeat("x", 64), URIs: u("https://sp.example/S" + strings.Repeat("x", 64))}, "65 characters"},
		{"device ID with space", Request{Profile: ProfileDevice, AssignedID: "S dev", URIs: u("https://sp.example/S%20dev")}, "whitespace"},
		{"device DNS", Request{Profile: ProfileDevice, AssignedID: "Sdevice1", URIs: u("https://sp.example/Sdevice1"), DNSNames: []string{"d.sp.example"}}, "no DNS or IP"},
		{"device constraints", Request{Profile: ProfileDevice, AssignedID: "Sdevice1", URIs: u("https://sp.example/Sdevice1"), PermittedDNSDomains: []string{"sp.example"}}, "no name constraints"},
		{"device validity too long", Request{Profile: ProfileDevice, AssignedID: "Sdevice1", URIs: u("https://sp.example/Sdevice1"), Validity: DefaultDeviceValidity + time.Second}, "exceeds"},
		{"device negative validity", Request{Profile: ProfileDevice, AssignedID: "Sdevice1", URIs: u("https://sp.example/Sdevice1"), Validity: -time.Hour}, "negative"},
		{"server no names", Request{Profile: ProfileServer}, "at least one"},
		{"server wildcard", Request{Profile: ProfileServer, DNSNames: []string{"*.sp.example"}}, "wildcard"},
		{"server bad label", Request{Profile: ProfileServer, DNSNames: []string{"mef..sp.example"}}, "invalid label"},
		{"server underscore", Request{Profile: ProfileServer, DNSNames: []string{"mef_1.sp.example"}}, "contains"},
		{"server URI", Request{Profile: ProfileServer, DNSNames: []string{"mef.sp.example"}, URIs: u("https://mef.sp.example/")}, "no URI"},
		{"server unspecified IP", Request{Profile: ProfileServer, IPAddresses: []net.IP{net.IPv4zero}}, "unspecified"},
		{"server too many SANs", Request{Profile: ProfileServer, DNSNames: many}, "exceed the limit"},
		{"obf client nothing", Request{Profile: ProfileOBFClient, AssignedID: "obs-1"}, "at least one URI or DNS"},
		{"obf client IP", Request{Profile: ProfileOBFClient, DNSNames: []string{"obs.example"}, IPAddresses: []net.IP{net.ParseIP("192.0.2.1")}}, "no IP"},
		{"obf client scheme-less URI", Request{Profile: ProfileOBFClient, URIs: u("//obs.example/x")}, "not an absolute URI"},
		{"subca no constraints", Request{Profile: ProfileOBFSubCA, AssignedID: "obs-1"}, "at least one permitted"},
		{"subca SANs", Request{Profile: ProfileOBFSubCA, AssignedID: "obs-1", DNSNames: []string{"obs.example"}, PermittedDNSDomains: []string{"example"}}, "no SANs"},
		{"subca bad constraint", Request{Profile: ProfileOBFSubCA, AssignedID: "obs-1", PermittedDNSDomains: []string{"*.example"}}, "wildcard"},
		// The test intermediate has path length 0.
		{"subca under pathlen 0", Request{Profile: ProfileOBFSubCA, AssignedID: "obs-1", PermittedDNSDomains: []string{"factory.example"}}, "path length 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.req.CSR = csr
			_, err := c.Issue(context.Background(), tt.req)
			if !errors.Is(err, ErrPolicy) {
				t.Fatalf("err = %v, want ErrPolicy", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %q, want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestIssueValidityClamp(t *testing.T) {
	p := newTestPKI(t)
	shortKey := testKey(t, "p256-d")
	short, err := CreateIntermediate(p.root, p.rootKey, shortKey.Public(), pkixName("short-lived issuing CA", ""), 30*day, p.now)
	if err != nil {
		t.Fatal(err)
	}
	if want := p.now.Add(30 * day).Truncate(time.Second); !short.NotAfter.Equal(want) {
		t.Fatalf("intermediate NotAfter = %v, want %v", short.NotAfter, want)
	}

	tests := []struct {
		name         string
		now          time.Time
		wantErr      error
		wantNotAfter time.Time
	}{
		{"clamped to issuer", p.now, nil, short.NotAfter},
		{"issuer expires in a minute", short.NotAfter.Add(-time.Minute), nil, short.NotAfter},
		{"issuer expired", short.NotAfter.Add(time.Second), ErrPolicy, time.Time{}},
		{"issuer not yet valid", short.NotBefore.Add(-time.Hour), ErrPolicy, time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(Config{Issuer: short, Signer: shortKey, Chain: []*x509.Certificate{short, p.root}, Now: func() time.Time { return tt.now }})
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.Issue(context.Background(), deviceRequest(t, testKey(t, "p256-b")))
			if !errors.Is(err, tt.wantErr) || (err != nil) != (tt.wantErr != nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if !got.Certificate.NotAfter.Equal(tt.wantNotAfter) {
				t.Errorf("NotAfter = %v, want %v (issuer's)", got.Certificate.NotAfter, tt.wantNotAfter)
			}
			if got.Certificate.NotBefore.Before(short.NotBefore) {
				t.Errorf("NotBefore %v precedes the issuer's %v", got.Certificate.NotBefore, short.NotBefore)
			}
		})
	}
}

func TestIssueSerials(t *testing.T) {
	p := newTestPKI(t)
	c := p.newCA(t, nil)
	req := deviceRequest(t, testKey(t, "p256-b"))

	seen := map[string]bool{}
	check := func(kind string, n interface {
		Sign() int
		BitLen() int
		String() string
	}) {
		if n.Sign() <= 0 {
			t.Errorf("%s serial %s is not positive", kind, n)
		}
		// 159 random bits: a bit length of 100 or less has probability
		// 2^-59 per draw.
		if n.BitLen() <= 100 || n.BitLen() > 159 {
			t.Errorf("%s serial has %d bits, want 101..159", kind, n.BitLen())
		}
		if seen[n.String()] {
			t.Errorf("%s serial %s repeated", kind, n)
		}
		seen[n.String()] = true
	}
	check("root", p.root.SerialNumber)
	check("intermediate", p.inter.SerialNumber)
	for range 32 {
		got, err := c.Issue(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		check("leaf", got.Certificate.SerialNumber)
	}
}

func TestIssueContextCancelled(t *testing.T) {
	p := newTestPKI(t)
	c := p.newCA(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Issue(ctx, deviceRequest(t, testKey(t, "p256-b"))); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

// TestIssueConcurrent exercises one CA from many goroutines (run with
// -race): the CA is shared by every request handler.
func TestIssueConcurrent(t *testing.T) {
	p := newTestPKI(t)
	c := p.newCA(t, func(cfg *Config) { cfg.Lint = true })
	req := deviceRequest(t, testKey(t, "p256-b"))
	errs := make(chan error, 8)
	for range cap(errs) {
		go func() {
			var err error
			for range 4 {
				if _, err = c.Issue(context.Background(), req); err != nil {
					break
				}
			}
			errs <- err
		}()
	}
	for range cap(errs) {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// TestLintRefuses shows the linter can fail: an RFC 5280 violation that the
// profile code would never produce is fed to it directly.
func TestLintRefuses(t *testing.T) {
	p := newTestPKI(t)
	c := p.newCA(t, func(cfg *Config) { cfg.Lint = true })
	key := testKey(t, "p256-b")
	ski, _ := subjectKeyID(key.Public())
	base := func() *x509.Certificate {
		return &x509.Certificate{
			SerialNumber: mustSerial(t), Subject: pkixName("Sdevice1", ""),
			NotBefore: p.now.Add(-time.Minute), NotAfter: p.now.Add(day),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			BasicConstraintsValid: true, SubjectKeyId: ski,
			URIs: []*url.URL{mustURL(t, "https://sp.example/Sdevice1")},
		}
	}
	tests := []struct {
		name    string
		profile Profile
		mod     func(*x509.Certificate)
		want    string // lint expected in the reason; "" means pass
	}{
		{"absolute device URI", ProfileDevice, func(*x509.Certificate) {}, ""},
		// The URI form device certificates once carried: RFC 5280 lints
		// apply to device certificates as to all others.
		{"scheme-less device URI", ProfileDevice, func(c *x509.Certificate) { c.URIs = []*url.URL{mustURL(t, "//sp.example/Sdevice1")} }, "e_ext_san_uri_relative"},
		{"scheme-less URI elsewhere", ProfileOBFClient, func(c *x509.Certificate) { c.URIs = []*url.URL{mustURL(t, "//sp.example/Sdevice1")} }, "e_ext_san_uri_relative"},
		{"CN too long", ProfileDevice, func(c *x509.Certificate) { c.Subject.CommonName = strings.Repeat("x", 65) }, "e_subject_common_name_max_length"},
		{"certSign without CA", ProfileDevice, func(c *x509.Certificate) { c.KeyUsage |= x509.KeyUsageCertSign }, "e_ext_key_usage_cert_sign_without_ca"},
		{"keyEncipherment with clientAuth", ProfileDevice, func(c *x509.Certificate) { c.KeyUsage |= x509.KeyUsageKeyEncipherment }, "e_key_usage_and_extended_key_usage_inconsistent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmpl := base()
			tt.mod(tmpl)
			tbs, err := c.tbs.build(tmpl, key.Public())
			if err != nil {
				t.Fatal(err)
			}
			err = c.linter.check(tbs)
			checkLintSetMatchesZlint(t, c.linter, tbs)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("lint: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrPolicy) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want ErrPolicy mentioning %s", err, tt.want)
			}
		})
	}
}

// checkLintSetMatchesZlint compares lintSet.run, which skips zlint's
// result bookkeeping and the warning/notice lints, with
// zlint.LintCertificateEx over the same filtered registry: the blocking
// verdict must name the same lints.
func checkLintSetMatchesZlint(t *testing.T, l *linter, tbs []byte) {
	t.Helper()
	der, err := assembleCertificate(tbs, l.algID, lintSignature)
	if err != nil {
		t.Fatal(err)
	}
	zc, err := zx509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	got := l.set.run(zc)
	reg, err := lint.GlobalRegistry().Filter(lint.FilterOptions{ExcludeSources: excludedLintSources, ExcludeNames: excludedLintNames})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for name, r := range zlint.LintCertificateEx(zc, reg).Results {
		if r.Status >= lint.Error {
			want = append(want, name)
		}
	}
	sort.Strings(want)
	// Some lints build their details from map iteration: compare names.
	for i, g := range got {
		got[i], _, _ = strings.Cut(g, " (")
	}
	if !slices.Equal(got, want) {
		t.Errorf("lintSet.run = %q, zlint.LintCertificateEx = %q", got, want)
	}
}

func mustSerial(t testing.TB) *bigInt {
	t.Helper()
	n, err := newSerial(randReader)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
