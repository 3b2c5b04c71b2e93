package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"io"
	"math/big"
)

// Key-size policy. 2048 is the floor every current guidance (NIST SP 800-57,
// BSI TR-02102) still accepts; 4096 is a ceiling so that a hostile CSR cannot
// make us spend milliseconds verifying an RSA-16384 signature.
const (
	minRSABits = 2048
	maxRSABits = 4096
)

// checkPublicKey enforces which subject keys this CA certifies: ECDSA P-256 and
// P-384 (TS-0003 §10.1 mandates P-256; P-384 is the design's stronger option),
// RSA 2048..4096 with e=65537, and Ed25519. P-224 is too weak, P-521 and
// X25519/X448 are not what oneM2M endpoints interoperate with, DSA is gone
// from TLS. It returns the key's algorithm for key-usage decisions.
func checkPublicKey(pub crypto.PublicKey) (x509.PublicKeyAlgorithm, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384():
			if d, small := smallPrivateKey(k); small {
				return 0, newErr(ErrWeakKey, nil,
					"ECDSA key whose private scalar is %d (or its negation): anyone can recover it", d)
			}
			return x509.ECDSA, nil
		case nil:
			return 0, newErr(ErrUnsupportedKey, nil, "ECDSA key without a curve")
		default:
			return 0, newErr(ErrUnsupportedKey, nil,
				"ECDSA curve %s is not supported (want P-256 or P-384)", k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if k.N == nil {
			return 0, newErr(ErrUnsupportedKey, nil, "RSA key without a modulus")
		}
		bits := k.N.BitLen()
		if bits < minRSABits {
			return 0, newErr(ErrWeakKey, nil,
				"RSA key of %d bits is below the %d-bit minimum", bits, minRSABits)
		}
		if bits > maxRSABits {
			return 0, newErr(ErrUnsupportedKey, nil,
				"RSA key of %d bits is above the %d-bit maximum", bits, maxRSABits)
		}
		if k.E != 65537 {
			return 0, newErr(ErrUnsupportedKey, nil,
				"RSA public exponent %d is not supported (want 65537)", k.E)
		}
		return x509.RSA, nil
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return 0, newErr(ErrUnsupportedKey, nil, "Ed25519 key of %d bytes", len(k))
		}
		return x509.Ed25519, nil
	case nil:
		return 0, newErr(ErrUnsupportedKey, nil, "no public key")
	default:
		return 0, newErr(ErrUnsupportedKey, nil, "%s keys are not supported", keyTypeName(pub))
	}
}

// subjectKeyID implements RFC 7093 §2 method 1: the leftmost 160 bits of the
// SHA-256 of the subjectPublicKey BIT STRING. SHA-256 rather than RFC 5280's
// SHA-1 so the package has no SHA-1 dependency for FIPS-minded deployments; the
// value only has to be stable and unique, and 160 bits keeps it the familiar
// size.
func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("ca: marshal public key for key identifier: %w", err)
	}
	return subjectKeyIDFromSPKI(spki)
}

func subjectKeyIDFromSPKI(spki []byte) ([]byte, error) {
	var info struct {
		Algorithm asn1.RawValue
		PublicKey asn1.BitString
	}
	rest, err := asn1.Unmarshal(spki, &info)
	if err != nil {
		return nil, fmt.Errorf("ca: parse subjectPublicKeyInfo for key identifier: %w", err)
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("ca: trailing data after subjectPublicKeyInfo")
	}
	sum := sha256.Sum256(info.PublicKey.Bytes)
	return sum[:20], nil
}

// serialBytes is 20 octets, the RFC 5280 §4.1.2.2 maximum. With the top bit
// cleared the DER INTEGER stays positive and within 20 octets while keeping
// 159 bits of entropy, far above the 64 bits the CA/B Forum requires and the
// 128 we promise.
const serialBytes = 20

var maxSerial = new(big.Int).Lsh(big.NewInt(1), 8*serialBytes-1)

// newSerial draws a uniformly random serial in [1, 2^159). Uniqueness rests on
// the entropy alone, so replicas need no shared counter (DESIGN.md: stateless
// replicas).
func newSerial(r io.Reader) (*big.Int, error) {
	for {
		n, err := rand.Int(r, maxSerial)
		if err != nil {
			return nil, fmt.Errorf("ca: draw serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// CheckSubjectKey applies the issuance key policy (ECDSA P-256/P-384, RSA
// 2048-4096 with e=65537, Ed25519) to a key from outside the CA, such as a
// certificate a trusted OBS issued.
func CheckSubjectKey(pub crypto.PublicKey) error {
	_, err := checkPublicKey(pub)
	return err
}
