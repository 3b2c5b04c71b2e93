package ca

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"math/big"
	"net/url"
	"strings"
	"testing"
)

func TestIssueRejectsCSR(t *testing.T) {
	p := newTestPKI(t)
	c := p.newCA(t, nil)
	good := makeCSR(t, testKey(t, "p256-b"), nil)

	badSig := append([]byte(nil), good...)
	badSig[len(badSig)-1] ^= 0xff // last byte of the signature BIT STRING

	// RSA keys we will not certify, built without generating them: the
	// key policy runs before the (junk) signature is looked at.
	big8192 := new(big.Int).Lsh(big.NewInt(1), 8191)
	big8192.Or(big8192, big.NewInt(1))
	rsa2048 := testKey(t, "rsa2048").Public().(*rsa.PublicKey)

	x25519, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	x25519SPKI := spkiOf(t, x25519.PublicKey())
	ecPoint := append([]byte{4}, make([]byte, 64)...)
	ecPoint[1], ecPoint[33] = 1, 1

	cn := func(n int) *x509.CertificateRequest {
		return &x509.CertificateRequest{Subject: pkixName(strings.Repeat("c", n), "")}
	}
	manySANs := &x509.CertificateRequest{}
	for i := range 101 {
		manySANs.DNSNames = append(manySANs.DNSNames, "d"+big.NewInt(int64(i)).String()+".example")
	}

	tests := []struct {
		name    string
		csr     []byte
		want    error
		notWant error  // an error kind this must NOT match
		reason  string // substring of the message
	}{
		{"empty", nil, ErrBadCSR, ErrUnsupportedKey, "empty"},
		{"garbage", []byte("this is not a CSR"), ErrBadCSR, ErrUnsupportedKey, "malformed"},
		{"truncated", good[:len(good)/2], ErrBadCSR, nil, "malformed"},
		{"PEM instead of DER", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: good}), ErrBadCSR, nil, "PEM"},
		{"oversize", append(good, make([]byte, MaxCSRSize)...), ErrBadCSR, nil, "limit"},
		{"trailing data", append(append([]byte(nil), good...), 0), ErrBadCSR, nil, "malformed"},
		{"bad signature", badSig, ErrBadCSR, ErrUnsupportedKey, "signature"},
		{"CN of 65 characters", makeCSR(t, testKey(t, "p256-b"), cn(65)), ErrBadCSR, nil, "65 characters"},
		{"101 SANs", makeCSR(t, testKey(t, "p256-b"), manySANs), ErrBadCSR, nil, "101 subject alternative names"},
		{"RSA-1024", makeCSR(t, testKey(t, "rsa1024"), nil), ErrWeakKey, nil, "RSA key of 1024 bits is below the 2048-bit minimum"},
		{"RSA-8192", rawCSR(t, spkiOf(t, &rsa.PublicKey{N: big8192, E: 65537}), ""), ErrUnsupportedKey, ErrWeakKey, "8192 bits is above"},
		{"RSA e=3", rawCSR(t, spkiOf(t, &rsa.PublicKey{N: rsa2048.N, E: 3}), ""), ErrUnsupportedKey, ErrWeakKey, "exponent 3"},
		{"P-224", makeCSR(t, testKey(t, "p224"), nil), ErrUnsupportedKey, ErrBadCSR, "P-224"},
		{"P-521", makeCSR(t, testKey(t, "p521"), nil), ErrUnsupportedKey, ErrBadCSR, "P-521"},
		{"X25519", rawCSR(t, x25519SPKI, ""), ErrUnsupportedKey, ErrBadCSR, "X25519"},
		{"DSA", rawCSR(t, rawSPKI(t, asn1.ObjectIdentifier{1, 2, 840, 10040, 4, 1},
			struct{ P, Q, G *big.Int }{big.NewInt(23), big.NewInt(11), big.NewInt(4)}, mustASN1(t, big.NewInt(9))), ""),
			ErrUnsupportedKey, ErrBadCSR, "DSA"},
		{"secp256k1", rawCSR(t, rawSPKI(t, asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1},
			asn1.ObjectIdentifier{1, 3, 132, 0, 10}, ecPoint), ""), ErrUnsupportedKey, ErrBadCSR, "secp256k1"},
		{"Ed448", rawCSR(t, rawSPKI(t, asn1.ObjectIdentifier{1, 3, 101, 113}, nil, make([]byte, 57)), ""),
			ErrUnsupportedKey, ErrBadCSR, "Ed448"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := deviceRequest(t, testKey(t, "p256-b"))
			req.CSR = tt.csr
			_, err := c.Issue(context.Background(), req)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if tt.notWant != nil && errors.Is(err, tt.notWant) {
				t.Errorf("err = %v also matches %v", err, tt.notWant)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("err %T is not an *Error", err)
			}
			if !strings.Contains(err.Error(), tt.reason) {
				t.Errorf("err = %q, want it to mention %q", err, tt.reason)
			}
		})
	}

	// Boundary: 64 characters is ub-common-name itself and is fine.
	req := deviceRequest(t, testKey(t, "p256-b"))
	req.CSR = makeCSR(t, testKey(t, "p256-b"), cn(64))
	if _, err := c.Issue(context.Background(), req); err != nil {
		t.Errorf("CN of 64 characters: %v", err)
	}
}

// TestRefusalsDoNotLeakChallengePassword: the enrolment token travels in
// the CSR's challengePassword; no refusal may echo it into logs or answers.
func TestRefusalsDoNotLeakChallengePassword(t *testing.T) {
	p := newTestPKI(t)
	c := p.newCA(t, nil)
	const token = "tok-5ecret-3nrolment-t0ken"
	spki, err := x509.MarshalPKIXPublicKey(testKey(t, "p256-b").Public())
	if err != nil {
		t.Fatal(err)
	}
	csr := rawCSR(t, spki, token)
	if parsed, err := x509.ParseCertificateRequest(csr); err != nil || !strings.Contains(string(parsed.RawTBSCertificateRequest), token) {
		t.Fatalf("test CSR does not carry the token (err %v)", err)
	}
	for _, req := range []Request{
		{CSR: csr, Profile: ProfileDevice}, // junk signature
		{CSR: csr[:len(csr)-3], Profile: ProfileDevice},
	} {
		_, err := c.Issue(context.Background(), req)
		if err == nil {
			t.Fatal("Issue accepted a CSR with a junk signature")
		}
		if strings.Contains(err.Error(), token) {
			t.Errorf("error leaks the challengePassword: %v", err)
		}
	}
}

func mustASN1(t testing.TB, v any) []byte {
	t.Helper()
	b, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func spkiOf(t testing.TB, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestCSRCheckFor: a CSR asking for anything its profile would not grant
// is refused, and the refusal names what was asked for.
func TestCSRCheckFor(t *testing.T) {
	key := testKey(t, "p256-b")
	ext := func(es ...pkixExtension) *x509.CertificateRequest {
		return &x509.CertificateRequest{Subject: pkixName("Sdevice1", ""), ExtraExtensions: es}
	}
	eku := func(oids ...asn1.ObjectIdentifier) pkixExtension {
		v, err := asn1.Marshal(oids)
		if err != nil {
			t.Fatal(err)
		}
		return pkixExtension{Id: oidExtKeyUsage, Value: v}
	}
	var (
		clientAuth  = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 2}
		serverAuth  = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 1}
		codeSigning = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 3}
	)
	tests := []struct {
		name    string
		profile Profile
		id      string
		tmpl    *x509.CertificateRequest
		refused string // "" for accepted; else a word the refusal must say
	}{
		{"device: plain", ProfileDevice, "Sdevice1", ext(), ""},
		{"device: no CN", ProfileDevice, "Sdevice1", &x509.CertificateRequest{}, ""},
		{"device: what it gets anyway", ProfileDevice, "Sdevice1",
			ext(eku(clientAuth), keyUsageExt(t, x509.KeyUsageDigitalSignature)), ""},
		{"device: the URI SAN is the caller's to check", ProfileDevice, "Sdevice1",
			&x509.CertificateRequest{URIs: []*url.URL{mustURL(t, "https://sp.example/Sdevice1")}}, ""},
		{"device: serverAuth", ProfileDevice, "Sdevice1", ext(eku(clientAuth, serverAuth)), "serverAuth"},
		{"device: codeSigning", ProfileDevice, "Sdevice1", ext(eku(codeSigning)), "codeSigning"},
		{"device: keyCertSign", ProfileDevice, "Sdevice1",
			ext(keyUsageExt(t, x509.KeyUsageDigitalSignature|x509.KeyUsageCertSign)), "keyCertSign"},
		{"device: keyEncipherment", ProfileDevice, "Sdevice1",
			ext(keyUsageExt(t, x509.KeyUsageKeyEncipherment)), "keyEncipherment"},
		{"device: CA", ProfileDevice, "Sdevice1", ext(basicConstraintsCA(t)), "CA status"},
		{"device: another extension", ProfileDevice, "Sdevice1",
			ext(pkixExtension{Id: asn1.ObjectIdentifier{2, 5, 29, 32}, Value: []byte{0x30, 0}}), "certificatePolicies"},
		{"device: an unknown extension", ProfileDevice, "Sdevice1",
			ext(pkixExtension{Id: asn1.ObjectIdentifier{1, 2, 3, 4}, Value: []byte{5, 0}}), "1.2.3.4"},
		{"device: a DNS SAN", ProfileDevice, "Sdevice1", &x509.CertificateRequest{DNSNames: []string{"mef.sp.example"}}, "DNS"},
		{"device: another device's CN", ProfileDevice, "Sdevice1",
			&x509.CertificateRequest{Subject: pkixName("Sdevice2", "")}, `"Sdevice2" is not the assigned ID "Sdevice1"`},
		{"sub-CA: CA and keyCertSign granted", ProfileOBFSubCA, "obs-1",
			&x509.CertificateRequest{Subject: pkixName("obs-1", ""), ExtraExtensions: []pkixExtension{basicConstraintsCA(t),
				keyUsageExt(t, x509.KeyUsageCertSign|x509.KeyUsageCRLSign)}}, ""},
		{"sub-CA: serverAuth", ProfileOBFSubCA, "obs-1",
			&x509.CertificateRequest{ExtraExtensions: []pkixExtension{eku(serverAuth)}}, "serverAuth"},
		{"server: serverAuth granted", ProfileServer, "", &x509.CertificateRequest{Subject: pkixName("mef.sp.example", ""),
			DNSNames: []string{"mef.sp.example"}, ExtraExtensions: []pkixExtension{eku(serverAuth)}}, ""},
		{"server: clientAuth", ProfileServer, "", &x509.CertificateRequest{ExtraExtensions: []pkixExtension{eku(clientAuth)}}, "clientAuth"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parsed, err := ParseCSR(makeCSR(t, key, tt.tmpl))
			if err != nil {
				t.Fatal(err)
			}
			err = parsed.CheckFor(tt.profile, tt.id)
			if tt.refused == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrPolicy) || !strings.Contains(err.Error(), tt.refused) {
				t.Fatalf("got %v, want an ErrPolicy refusal naming %q", err, tt.refused)
			}
		})
	}
}

// TestMalformedCSRSaysNoASN1Internals: the refusal of an unparseable CSR
// speaks of PKCS#10, not of ASN.1 tags or Go types.
func TestMalformedCSRSaysNoASN1Internals(t *testing.T) {
	for _, der := range [][]byte{[]byte("not a CSR at all"), {0x30, 0x03, 0x02, 0x01, 0x01}, {0x31, 0x00}} {
		_, err := ParseCSR(der)
		if err == nil || !errors.Is(err, ErrBadCSR) {
			t.Fatalf("%x: %v", der, err)
		}
		for _, leak := range []string{"tags don't match", "asn1", "class:", "struct"} {
			if strings.Contains(err.Error(), leak) {
				t.Fatalf("%x: %q says %q", der, err, leak)
			}
		}
	}
}
