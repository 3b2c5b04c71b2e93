package ca

import (
	"bytes"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestCeremony(t *testing.T) {
	p := newTestPKI(t)

	if !p.root.IsCA || !p.root.BasicConstraintsValid || p.root.MaxPathLen != -1 {
		t.Errorf("root: IsCA=%v MaxPathLen=%d, want unconstrained CA", p.root.IsCA, p.root.MaxPathLen)
	}
	if p.root.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
		t.Errorf("root KeyUsage = %v", p.root.KeyUsage)
	}
	if err := p.root.CheckSignatureFrom(p.root); err != nil {
		t.Errorf("root is not self-signed: %v", err)
	}
	if ski, _ := subjectKeyID(p.rootKey.Public()); !bytes.Equal(p.root.SubjectKeyId, ski) {
		t.Error("root SKI is not derived from its key")
	}

	in := p.inter
	if !in.IsCA || in.MaxPathLen != 0 || !in.MaxPathLenZero {
		t.Errorf("intermediate: IsCA=%v MaxPathLen=%d zero=%v, want path length 0", in.IsCA, in.MaxPathLen, in.MaxPathLenZero)
	}
	if want := x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature; in.KeyUsage != want {
		t.Errorf("intermediate KeyUsage = %v, want %v", in.KeyUsage, want)
	}
	if !bytes.Equal(in.AuthorityKeyId, p.root.SubjectKeyId) {
		t.Error("intermediate AKI is not the root's SKI")
	}
	if err := in.CheckSignatureFrom(p.root); err != nil {
		t.Errorf("intermediate not signed by root: %v", err)
	}

	// Validity is clamped inside the parent's.
	long, err := CreateIntermediate(p.root, p.rootKey, testKey(t, "p256-d").Public(), pkixName("long", ""), 100*365*day, p.now)
	if err != nil {
		t.Fatal(err)
	}
	if !long.NotAfter.Equal(p.root.NotAfter) {
		t.Errorf("intermediate NotAfter %v outlives root %v", long.NotAfter, p.root.NotAfter)
	}

	tests := []struct {
		name   string
		create func() error
		want   error
	}{
		{"root with weak key", func() error {
			_, err := CreateRoot(testKey(t, "rsa1024"), pkixName("r", ""), day, p.now)
			return err
		}, ErrWeakKey},
		{"root with zero validity", func() error {
			_, err := CreateRoot(testKey(t, "p256"), pkixName("r", ""), 0, p.now)
			return err
		}, nil},
		{"intermediate with wrong parent key", func() error {
			_, err := CreateIntermediate(p.root, testKey(t, "p256"), testKey(t, "p256-d").Public(), pkixName("i", ""), day, p.now)
			return err
		}, ErrSignerMismatch},
		{"intermediate under pathlen-0 parent", func() error {
			_, err := CreateIntermediate(p.inter, p.interKey, testKey(t, "p256-d").Public(), pkixName("i", ""), day, p.now)
			return err
		}, ErrPolicy},
		{"intermediate under expired root", func() error {
			_, err := CreateIntermediate(p.root, p.rootKey, testKey(t, "p256-d").Public(), pkixName("i", ""), day, p.root.NotAfter.Add(time.Hour))
			return err
		}, ErrPolicy},
		{"intermediate with P-224 key", func() error {
			_, err := CreateIntermediate(p.root, p.rootKey, testKey(t, "p224").Public(), pkixName("i", ""), day, p.now)
			return err
		}, ErrUnsupportedKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.create()
			if err == nil {
				t.Fatal("no error")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestCheckSignerMatches(t *testing.T) {
	p := newTestPKI(t)
	tests := []struct {
		name string
		cert *x509.Certificate
		key  string
		ok   bool
	}{
		{"root with its key", p.root, "p384", true},
		{"intermediate with its key", p.inter, "p256", true},
		{"intermediate with another P-256 key", p.inter, "p256-b", false},
		{"intermediate with an Ed25519 key", p.inter, "ed25519", false},
		{"intermediate with an RSA key", p.inter, "rsa2048", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckSignerMatches(tt.cert, testKey(t, tt.key))
			if tt.ok != (err == nil) {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
			if err == nil {
				return
			}
			var e *Error
			if !errors.Is(err, ErrSignerMismatch) || !errors.As(err, &e) || e.Kind != ErrSignerMismatch {
				t.Errorf("err = %#v, want *Error of kind ErrSignerMismatch", err)
			}
		})
	}
}

func TestNew(t *testing.T) {
	p := newTestPKI(t)
	otherRoot, err := CreateRoot(testKey(t, "p256-d"), pkixName("other root", ""), day, p.now)
	if err != nil {
		t.Fatal(err)
	}
	leaf := func() *x509.Certificate {
		c := p.newCA(t, nil)
		is, err := c.Issue(t.Context(), deviceRequest(t, testKey(t, "p256-b")))
		if err != nil {
			t.Fatal(err)
		}
		return is.Certificate
	}()

	tests := []struct {
		name      string
		cfg       Config
		want      error  // kind, if any
		reason    string // substring of the message
		wantChain []*x509.Certificate
	}{
		{"ok, root dropped from chain", Config{Issuer: p.inter, Signer: p.interKey, Chain: []*x509.Certificate{p.inter, p.root}}, nil, "", []*x509.Certificate{p.inter}},
		{"ok, empty chain means issuer", Config{Issuer: p.inter, Signer: p.interKey}, nil, "", []*x509.Certificate{p.inter}},
		{"ok, root as issuer", Config{Issuer: p.root, Signer: p.rootKey}, nil, "", []*x509.Certificate{}},
		{"signer mismatch", Config{Issuer: p.inter, Signer: p.rootKey}, ErrSignerMismatch, "not the key of certificate", nil},
		{"no issuer", Config{Signer: p.interKey}, nil, "no issuer", nil},
		{"no signer", Config{Issuer: p.inter}, nil, "no signer", nil},
		{"issuer is not a CA", Config{Issuer: leaf, Signer: testKey(t, "p256-b")}, nil, "not a CA", nil},
		{"chain does not start at issuer", Config{Issuer: p.inter, Signer: p.interKey, Chain: []*x509.Certificate{p.root}}, nil, "chain[0]", nil},
		{"chain not linked", Config{Issuer: p.inter, Signer: p.interKey, Chain: []*x509.Certificate{p.inter, otherRoot}}, nil, "not signed by", nil},
		{"bad CRL URL", Config{Issuer: p.inter, Signer: p.interKey, CRLURL: "ca.sp.example/crl"}, nil, "CRL URL", nil},
		{"bad OCSP URL", Config{Issuer: p.inter, Signer: p.interKey, OCSPURL: "ldap://x/"}, nil, "OCSP URL", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(tt.cfg)
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				got := c.Chain()
				if len(got) != len(tt.wantChain) {
					t.Fatalf("chain has %d certs, want %d", len(got), len(tt.wantChain))
				}
				for i := range got {
					if !got[i].Equal(tt.wantChain[i]) {
						t.Errorf("chain[%d] = %s", i, got[i].Subject)
					}
				}
				return
			}
			if err == nil {
				t.Fatal("New accepted a bad config")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.reason) {
				t.Errorf("err = %q, want it to mention %q", err, tt.reason)
			}
		})
	}
}

func TestErrorType(t *testing.T) {
	cause := errors.New("asn1: truncated")
	err := error(&Error{Kind: ErrWeakKey, Reason: "csr: RSA key of 1024 bits is below the 2048-bit minimum", Err: cause})
	for _, target := range []error{ErrWeakKey, ErrUnsupportedKey, cause} {
		if !errors.Is(err, target) {
			t.Errorf("errors.Is(err, %v) = false", target)
		}
	}
	for _, other := range []error{ErrBadCSR, ErrPolicy, ErrSignerMismatch} {
		if errors.Is(err, other) {
			t.Errorf("errors.Is(err, %v) = true", other)
		}
	}
	if got, want := err.Error(), "csr: RSA key of 1024 bits is below the 2048-bit minimum: asn1: truncated"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if got := (&Error{Kind: ErrPolicy}).Error(); got != ErrPolicy.Error() {
		t.Errorf("reason-less Error() = %q", got)
	}
}
