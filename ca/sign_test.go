package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"io"
	"math/big"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// TestSignMatchesGo issues under issuers of every key type the ceremony can
// produce and checks that the certificate is what x509.CreateCertificate
// would have written (same signature AlgorithmIdentifier inside and outside
// the TBS) and that its signature verifies: the TBS is built with a
// throwaway key and relabelled, so a wrong label would break every chain.
func TestSignMatchesGo(t *testing.T) {
	for _, kind := range []string{"p256", "p384", "rsa2048", "ed25519"} {
		t.Run(kind, func(t *testing.T) {
			p := newTestPKI(t)
			key := testKey(t, kind)
			inter, err := CreateIntermediate(p.root, p.rootKey, key.Public(), pkix.Name{CommonName: "issuer " + kind}, 365*day, p.now)
			if err != nil {
				t.Fatal(err)
			}
			c, err := New(Config{Issuer: inter, Signer: key, Chain: []*x509.Certificate{inter, p.root}, Now: func() time.Time { return p.now }, Lint: true})
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.Issue(context.Background(), deviceRequest(t, testKey(t, "p256-b")))
			if err != nil {
				t.Fatal(err)
			}
			if err := got.Certificate.CheckSignatureFrom(inter); err != nil {
				t.Fatalf("issued certificate does not verify: %v", err)
			}
			// Go's own choice of algorithm for this key, from a certificate it signed.
			ref, err := x509.CreateCertificate(randReader, &x509.Certificate{SerialNumber: mustSerial(t)}, inter, testKey(t, "p256-c").Public(), key)
			if err != nil {
				t.Fatal(err)
			}
			want, wantOuter := sigAlgFields(t, ref)
			inTBS, outer := sigAlgFields(t, got.DER)
			if !bytes.Equal(inTBS, want) || !bytes.Equal(outer, wantOuter) {
				t.Fatalf("signature algorithm %x / %x, Go writes %x / %x", inTBS, outer, want, wantOuter)
			}
		})
	}
}

// sigAlgFields returns the TBS signature field and the outer
// signatureAlgorithm of a DER certificate.
func sigAlgFields(t *testing.T, der []byte) (inTBS, outer []byte) {
	t.Helper()
	in := cryptobyte.String(der)
	var c, tbs, alg, tbsAlg, skip cryptobyte.String
	var tag cbasn1.Tag
	if !in.ReadASN1(&c, cbasn1.SEQUENCE) || !c.ReadASN1(&tbs, cbasn1.SEQUENCE) || !c.ReadASN1Element(&alg, cbasn1.SEQUENCE) ||
		!tbs.ReadAnyASN1Element(&skip, &tag) || !tbs.SkipASN1(cbasn1.INTEGER) || !tbs.ReadASN1Element(&tbsAlg, cbasn1.SEQUENCE) {
		t.Fatal("malformed certificate")
	}
	return tbsAlg, alg
}

// badSigner returns signatures that do not verify, as a faulty HSM or a key
// URI pointing at the wrong key would.
type badSigner struct{ crypto.Signer }

func (b badSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	sig, err := b.Signer.Sign(r, digest, opts)
	if err == nil {
		sig[len(sig)-1] ^= 1
	}
	return sig, err
}

// TestSignCatchesBadSignatures: the first signature is always verified, so a
// signer that is wrong rather than unlucky is caught before its certificate
// leaves; with RSA and Ed25519 issuers every signature is.
func TestSignCatchesBadSignatures(t *testing.T) {
	p := newTestPKI(t)
	c := p.newCA(t, func(cfg *Config) { cfg.Signer = badSigner{p.interKey} })
	_, err := c.Issue(context.Background(), deviceRequest(t, testKey(t, "p256-b")))
	if err == nil || !strings.Contains(err.Error(), "invalid signature") || errors.Is(err, ErrPolicy) {
		t.Fatalf("err = %v, want an invalid-signature failure", err)
	}
}

// TestSmallPrivateKeyRefused: keys anyone can recover (d or n-d at most
// 2^16, the bound of zlint's e_ecdsa_small_private_key that checkPublicKey
// took over) are refused as weak whether or not linting is on; a random key
// and d just past the bound are not.
func TestSmallPrivateKeyRefused(t *testing.T) {
	for _, curve := range []elliptic.Curve{elliptic.P256(), elliptic.P384()} {
		n := curve.Params().N
		for _, tc := range []struct {
			d    *big.Int
			weak bool
		}{
			{big.NewInt(1), true},
			{big.NewInt(5), true},
			{big.NewInt(1 << 16), true},
			{new(big.Int).Sub(n, big.NewInt(7)), true},
			{new(big.Int).Sub(n, big.NewInt(1<<16)), true},
			{big.NewInt(1<<16 + 1), false},
			{new(big.Int).Sub(n, big.NewInt(1<<16+1)), false},
		} {
			x, y := curve.ScalarBaseMult(tc.d.Bytes())
			_, err := checkPublicKey(&ecdsa.PublicKey{Curve: curve, X: x, Y: y})
			if got := errors.Is(err, ErrWeakKey); got != tc.weak {
				t.Errorf("%s d=%v: err = %v, want weak=%v", curve.Params().Name, tc.d, err, tc.weak)
			}
		}
	}
	if _, err := checkPublicKey(testKey(t, "p256-d").Public()); err != nil {
		t.Fatalf("random key refused: %v", err)
	}
}

// TestSmallKeyTables checks the committed tables against fresh
// multiplications at a sample of scalars (all of them would take seconds).
func TestSmallKeyTables(t *testing.T) {
	for _, tc := range []struct {
		curve elliptic.Curve
		raw   []byte
	}{{elliptic.P256(), smallKeyP256}, {elliptic.P384(), smallKeyP384}} {
		if len(tc.raw) != 4<<smallKeyBits {
			t.Fatalf("%s table has %d bytes", tc.curve.Params().Name, len(tc.raw))
		}
		for d := 1; d <= 1<<smallKeyBits; d += 997 {
			x, _ := tc.curve.ScalarBaseMult(big.NewInt(int64(d)).Bytes())
			if got := binary.BigEndian.Uint32(tc.raw[4*(d-1):]); got != uint32(x.Uint64()) {
				t.Fatalf("%s: entry %d is %08x, want %08x", tc.curve.Params().Name, d, got, uint32(x.Uint64()))
			}
		}
	}
}
