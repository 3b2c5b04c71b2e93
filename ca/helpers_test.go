package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// Key generation dominates test time (RSA especially), so keys are made once
// per kind and shared; tests never mutate them.
var (
	keyMu    sync.Mutex
	keyCache = map[string]crypto.Signer{}
)

func testKey(t testing.TB, kind string) crypto.Signer {
	t.Helper()
	keyMu.Lock()
	defer keyMu.Unlock()
	if k, ok := keyCache[kind]; ok {
		return k
	}
	var (
		k   crypto.Signer
		err error
	)
	switch kind {
	case "p224":
		k, err = ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	case "p256", "p256-b", "p256-c", "p256-d":
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "p384":
		k, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "p521":
		k, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	case "rsa1024":
		k, err = rsa.GenerateKey(rand.Reader, 1024)
	case "rsa2048":
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	case "rsa4096":
		k, err = rsa.GenerateKey(rand.Reader, 4096)
	case "ed25519":
		_, k, err = ed25519.GenerateKey(rand.Reader)
	default:
		t.Fatalf("unknown key kind %q", kind)
	}
	if err != nil {
		t.Fatalf("generate %s key: %v", kind, err)
	}
	keyCache[kind] = k
	return k
}

// makeCSR builds a DER CSR signed by key from tmpl (nil means a minimal
// one).
func makeCSR(t testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	if tmpl == nil {
		tmpl = &x509.CertificateRequest{Subject: pkix.Name{CommonName: "Sdevice1"}}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatalf("create CSR: %v", err)
	}
	return der
}

type testPKI struct {
	root, inter       *x509.Certificate
	rootKey, interKey crypto.Signer
	now               time.Time
}

// newTestPKI builds root -> issuing intermediate with the ceremony helpers.
// now is real time because openssl verify checks validity against the wall
// clock.
func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	now := time.Now()
	p := &testPKI{rootKey: testKey(t, "p384"), interKey: testKey(t, "p256"), now: now}
	var err error
	p.root, err = CreateRoot(p.rootKey, pkix.Name{CommonName: "credfactory test root", Organization: []string{"SP Example"}}, 10*365*day, now)
	if err != nil {
		t.Fatalf("CreateRoot: %v", err)
	}
	p.inter, err = CreateIntermediate(p.root, p.rootKey, p.interKey.Public(),
		pkix.Name{CommonName: "credfactory test issuing CA", Organization: []string{"SP Example"}}, 5*365*day, now)
	if err != nil {
		t.Fatalf("CreateIntermediate: %v", err)
	}
	return p
}

func (p *testPKI) newCA(t testing.TB, mod func(*Config)) *CA {
	t.Helper()
	cfg := Config{
		Issuer: p.inter,
		Signer: p.interKey,
		Chain:  []*x509.Certificate{p.inter, p.root},
		Now:    func() time.Time { return p.now },
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatalf("parse URL %q: %v", s, err)
	}
	return u
}

func deviceRequest(t testing.TB, key crypto.Signer) Request {
	t.Helper()
	return Request{
		CSR:        makeCSR(t, key, nil),
		Profile:    ProfileDevice,
		AssignedID: "Sdevice1",
		URIs:       []*url.URL{mustURL(t, "https://sp.example/Sdevice1")},
	}
}

var (
	oidChallengePassword = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 7}
	oidECDSAWithSHA256   = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
)

// rawCSR hand-assembles a CSR around an arbitrary subjectPublicKeyInfo, for
// key types Go will not put in a CSR itself. The signature is junk.
func rawCSR(t testing.TB, spki []byte, challengePassword string) []byte {
	t.Helper()
	subj, err := asn1.Marshal(pkix.Name{CommonName: "Sdevice1"}.ToRDNSequence())
	if err != nil {
		t.Fatal(err)
	}
	var attrs []byte
	if challengePassword != "" {
		pw, err := asn1.MarshalWithParams(challengePassword, "utf8")
		if err != nil {
			t.Fatal(err)
		}
		attr, err := asn1.Marshal(struct {
			Type   asn1.ObjectIdentifier
			Values []asn1.RawValue `asn1:"set"`
		}{oidChallengePassword, []asn1.RawValue{{FullBytes: pw}}})
		if err != nil {
			t.Fatal(err)
		}
		attrs = attr
	}
	info, err := asn1.Marshal(struct {
		Version int
		Subject asn1.RawValue
		SPKI    asn1.RawValue
		Attrs   asn1.RawValue
	}{
		Subject: asn1.RawValue{FullBytes: subj},
		SPKI:    asn1.RawValue{FullBytes: spki},
		Attrs:   asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: attrs},
	})
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 70)
	der, err := asn1.Marshal(struct {
		Info asn1.RawValue
		Alg  pkix.AlgorithmIdentifier
		Sig  asn1.BitString
	}{asn1.RawValue{FullBytes: info}, pkix.AlgorithmIdentifier{Algorithm: oidECDSAWithSHA256}, asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}})
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// rawSPKI builds a subjectPublicKeyInfo from an algorithm OID, optional
// parameters and key bytes.
func rawSPKI(t testing.TB, alg asn1.ObjectIdentifier, params any, key []byte) []byte {
	t.Helper()
	ai := pkix.AlgorithmIdentifier{Algorithm: alg}
	if params != nil {
		p, err := asn1.Marshal(params)
		if err != nil {
			t.Fatal(err)
		}
		ai.Parameters = asn1.RawValue{FullBytes: p}
	}
	der, err := asn1.Marshal(struct {
		Alg pkix.AlgorithmIdentifier
		Key asn1.BitString
	}{ai, asn1.BitString{Bytes: key, BitLength: 8 * len(key)}})
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// opensslBin returns the openssl binary. Without it the test is skipped,
// except under CI (env CI set), where it fails: make deps-test installs it,
// and a cross-check that silently skips proves nothing. Callers make their
// Go-side assertions first, so a skip never hides them.
func opensslBin(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("openssl is required under CI: %v (make deps-test installs it)", err)
		}
		t.Skipf("openssl is not installed (%v): make deps-test installs it", err)
	}
	return bin
}

// opensslVerify runs `openssl verify` on leaf with root as the only trust
// anchor; purpose is e.g. "sslclient" or "" for none. It skips or fails as
// opensslBin does, so call it after the Go-side assertions.
func opensslVerify(t testing.TB, root *x509.Certificate, intermediates []*x509.Certificate, leaf *x509.Certificate, purpose string) (string, error) {
	t.Helper()
	bin := opensslBin(t)
	dir := t.TempDir()
	write := func(name string, certs []*x509.Certificate) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, EncodeCertsPEM(certs), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	args := []string{"verify", "-CAfile", write("root.pem", []*x509.Certificate{root})}
	if len(intermediates) > 0 {
		args = append(args, "-untrusted", write("int.pem", intermediates))
	}
	if purpose != "" {
		args = append(args, "-purpose", purpose)
	}
	args = append(args, write("leaf.pem", []*x509.Certificate{leaf}))
	out, err := exec.Command(bin, args...).CombinedOutput()
	return string(out), err
}

type (
	pkixExtension = pkix.Extension
	bigInt        = big.Int
)

var (
	randReader          = rand.Reader
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidExtKeyUsage      = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidNameConstraints  = asn1.ObjectIdentifier{2, 5, 29, 30}
)

func pkixName(cn, org string) pkix.Name {
	n := pkix.Name{CommonName: cn}
	if org != "" {
		n.Organization = []string{org}
	}
	return n
}

// CSR extension requests a greedy client might send.
func basicConstraintsCA(t testing.TB) pkix.Extension {
	t.Helper()
	v, err := asn1.Marshal(struct {
		IsCA bool `asn1:"optional"`
	}{true})
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: oidBasicConstraints, Critical: true, Value: v}
}

func keyUsageExt(t testing.TB, ku x509.KeyUsage) pkix.Extension {
	t.Helper()
	var b [2]byte
	b[0] = reverseBits(byte(ku))
	b[1] = reverseBits(byte(ku >> 8))
	n := 2
	if b[1] == 0 {
		n = 1
	}
	v, err := asn1.Marshal(asn1.BitString{Bytes: b[:n], BitLength: 8 * n})
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: oidKeyUsage, Critical: true, Value: v}
}

func reverseBits(b byte) byte {
	var r byte
	for i := 0; i < 8; i++ {
		r = r<<1 | b&1
		b >>= 1
	}
	return r
}

func extKeyUsageExt(t testing.TB) pkix.Extension {
	t.Helper()
	v, err := asn1.Marshal([]asn1.ObjectIdentifier{
		{1, 3, 6, 1, 5, 5, 7, 3, 3}, // codeSigning
		{1, 3, 6, 1, 5, 5, 7, 3, 1}, // serverAuth
	})
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: oidExtKeyUsage, Value: v}
}
