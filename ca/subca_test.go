package ca

import (
	"context"
	"crypto/x509"
	"errors"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestOBFSubCA: the root certifies a name-constrained sub-CA for an OBS; the
// OBS's CA (the same code on the OBS's key) issues device certificates, and
// those outside the permitted names fail verification.
func TestOBFSubCA(t *testing.T) {
	p := newTestPKI(t)
	rootCA := p.newCA(t, func(cfg *Config) {
		cfg.Issuer, cfg.Signer, cfg.Chain, cfg.Lint = p.root, p.rootKey, []*x509.Certificate{p.root}, true
	})
	subKey := testKey(t, "p256-c")
	sub, err := rootCA.Issue(context.Background(), Request{
		CSR:                 makeCSR(t, subKey, nil),
		Profile:             ProfileOBFSubCA,
		AssignedID:          "obs-1",
		PermittedDNSDomains: []string{"factory.example"},
		PermittedURIDomains: []string{"sp.example"},
	})
	if err != nil {
		t.Fatalf("issue sub-CA: %v", err)
	}
	sc := sub.Certificate
	if len(sub.Chain) != 0 {
		t.Errorf("chain of a root-issued certificate has %d certs, want 0 (root excluded)", len(sub.Chain))
	}
	if !sc.IsCA || sc.MaxPathLen != 0 || !sc.MaxPathLenZero {
		t.Errorf("IsCA=%v MaxPathLen=%d zero=%v, want CA with path length 0", sc.IsCA, sc.MaxPathLen, sc.MaxPathLenZero)
	}
	if want := x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature; sc.KeyUsage != want {
		t.Errorf("KeyUsage = %v, want %v", sc.KeyUsage, want)
	}
	if !slices.Equal(sc.PermittedDNSDomains, []string{"factory.example"}) || !slices.Equal(sc.PermittedURIDomains, []string{"sp.example"}) {
		t.Errorf("constraints DNS %v URI %v", sc.PermittedDNSDomains, sc.PermittedURIDomains)
	}
	critical := false
	for _, ext := range sc.Extensions {
		if ext.Id.Equal(oidNameConstraints) {
			critical = ext.Critical
		}
	}
	if !critical || !sc.PermittedDNSDomainsCritical {
		t.Error("name constraints extension missing or not critical")
	}
	if len(sc.ExcludedIPRanges) != 2 {
		t.Errorf("excluded IP ranges %v, want all of IPv4 and IPv6", sc.ExcludedIPRanges)
	}
	if !slices.Equal(sc.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
		t.Errorf("sub-CA EKU %v, want client auth only", sc.ExtKeyUsage)
	}

	obsCA, err := New(Config{Issuer: sc, Signer: subKey, Chain: []*x509.Certificate{sc, p.root}, Lint: true, Now: func() time.Time { return p.now }})
	if err != nil {
		t.Fatalf("New on the sub-CA: %v", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(p.root)
	inters := x509.NewCertPool()
	inters.AddCert(sc)

	tests := []struct {
		name   string
		uri    string
		inside bool
	}{
		{"permitted URI host", "onem2m://sp.example/Sdevice1", true},
		{"other URI host", "onem2m://other.example/Sdevice1", false},
		{"sibling suffix", "onem2m://evilsp.example/Sdevice1", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := deviceRequest(t, testKey(t, "p256-b"))
			req.URIs = []*url.URL{mustURL(t, tt.uri)}
			leaf, err := obsCA.Issue(context.Background(), req)
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			_, verr := leaf.Certificate.Verify(x509.VerifyOptions{
				Roots: roots, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			})
			if tt.inside {
				if verr != nil {
					t.Errorf("Go Verify: %v", verr)
				}
			} else {
				var cie x509.CertificateInvalidError
				if !errors.As(verr, &cie) || cie.Reason != x509.CANotAuthorizedForThisName {
					t.Errorf("Go Verify err = %v, want a name-constraint violation", verr)
				}
			}
			// Then OpenSSL, which skips without openssl (fails under CI)
			// once the Go-side verdict above has been checked.
			out, oerr := opensslVerify(t, p.root, leaf.Chain, leaf.Certificate, "sslclient")
			if tt.inside {
				if oerr != nil {
					t.Errorf("openssl verify: %v\n%s", oerr, out)
				}
				return
			}
			if oerr == nil || !strings.Contains(out, "permitted subtree violation") {
				t.Errorf("openssl verify accepted a name outside the constraints: %v\n%s", oerr, out)
			}
		})
	}

	// A scheme-less AE-ID URI cannot be checked against URI constraints
	// by OpenSSL, so the sub-CA refuses to issue it.
	schemeless := deviceRequest(t, testKey(t, "p256-b"))
	schemeless.URIs = []*url.URL{mustURL(t, "//sp.example/Sdevice1")}
	if _, err := obsCA.Issue(context.Background(), schemeless); !errors.Is(err, ErrPolicy) {
		t.Errorf("scheme-less URI under URI constraints: err = %v, want ErrPolicy", err)
	}
	// Path length 0: the OBS cannot mint further CAs.
	if _, err := obsCA.Issue(context.Background(), Request{
		CSR: makeCSR(t, testKey(t, "p256-b"), nil), Profile: ProfileOBFSubCA, AssignedID: "obs-1-sub",
		PermittedDNSDomains: []string{"line2.factory.example"},
	}); !errors.Is(err, ErrPolicy) {
		t.Errorf("sub-sub-CA: err = %v, want ErrPolicy", err)
	}
}
