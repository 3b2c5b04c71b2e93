package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	encasn1 "encoding/asn1"
	"fmt"
	"sync/atomic"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Issuance builds the TBSCertificate once, lints exactly those bytes, and has
// the issuer key sign exactly those bytes (the approach of Boulder's
// issuance package: what chains to our root is byte for byte what the linter
// saw). Go's x509.CreateCertificate cannot sign given TBS bytes, so the TBS
// comes from a CreateCertificate call with a throwaway Ed25519 key, the
// cheapest signature Go can make and check, and its signature
// AlgorithmIdentifier (the one TBS field that depends on the signing key) is
// then replaced with the issuer's. Building a certificate twice, and signing
// and re-verifying it with a throwaway ECDSA key, cost more than the HSM
// signature itself.

// sigAlg is how an issuer key signs: the AlgorithmIdentifier written in the
// TBS and around the signature (RFC 5280 §4.1.1.2, §4.1.2.3), the digest the
// signer takes, and how often the signature is verified after signing.
type sigAlg struct {
	algID []byte // DER AlgorithmIdentifier, as Go's x509 encodes it
	hash  crypto.Hash
	// verifyEvery is 1 for keys whose faulty signatures can leak the key
	// (RSA-CRT, Ed25519's deterministic nonces: every signature is checked,
	// as x509.CreateCertificate does) and checkSampleECDSA for ECDSA, whose
	// faulty signature reveals nothing about the key and only produces a
	// certificate that fails every relying party's check: a sample still
	// catches a signer that is wrong rather than unlucky (wrong key or
	// mechanism behind the same URI).
	verifyEvery uint64
}

// checkSampleECDSA: one ECDSA signature in this many is verified after
// signing (and the first one always).
const checkSampleECDSA = 64

var (
	oidSigECDSAWithSHA256 = encasn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidSigECDSAWithSHA384 = encasn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}
	oidSigSHA256WithRSA   = encasn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}
	oidSigEd25519         = encasn1.ObjectIdentifier{1, 3, 101, 112}
)

// signatureAlgorithmFor picks the algorithm Go's x509 picks for a key of this
// type (SHA-256 with RSA and P-256, SHA-384 with P-384,
// pure Ed25519), so certificates look as they did when CreateCertificate
// signed them.
func signatureAlgorithmFor(pub crypto.PublicKey) (sigAlg, error) {
	var oid encasn1.ObjectIdentifier
	var a sigAlg
	nullParams := false
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		a.verifyEvery = checkSampleECDSA
		switch k.Curve {
		case elliptic.P256():
			oid, a.hash = oidSigECDSAWithSHA256, crypto.SHA256
		case elliptic.P384():
			oid, a.hash = oidSigECDSAWithSHA384, crypto.SHA384
		default:
			return a, fmt.Errorf("no signature algorithm for issuer curve %v", k.Curve)
		}
	case *rsa.PublicKey:
		oid, a.hash, nullParams, a.verifyEvery = oidSigSHA256WithRSA, crypto.SHA256, true, 1
	case ed25519.PublicKey:
		oid, a.verifyEvery = oidSigEd25519, 1
	default:
		return a, fmt.Errorf("no signature algorithm for issuer key type %T", pub)
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oid)
		if nullParams { // RFC 4055 §5: the parameters of RSA PKCS#1 v1.5 are NULL
			b.AddASN1NULL()
		}
	})
	der, err := b.Bytes()
	if err != nil {
		return a, fmt.Errorf("encode signature algorithm: %w", err)
	}
	a.algID = der
	return a, nil
}

// tbsBuilder makes the TBSCertificate an issuer will sign.
type tbsBuilder struct {
	key    ed25519.PrivateKey
	parent *x509.Certificate // the issuer, with the throwaway public key
	alg    sigAlg
}

func newTBSBuilder(issuer *x509.Certificate, alg sigAlg) (*tbsBuilder, error) {
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("throwaway key: %w", err)
	}
	// CreateCertificate insists that the signer matches parent.PublicKey;
	// everything it copies from the parent (issuer name, AKI from the
	// issuer's SKI) stays real.
	parent := *issuer
	parent.PublicKey = pub
	return &tbsBuilder{key: key, parent: &parent, alg: alg}, nil
}

// build returns the DER TBSCertificate of tmpl for subject key pub, as the
// issuer signs it.
func (t *tbsBuilder) build(tmpl *x509.Certificate, pub crypto.PublicKey) ([]byte, error) {
	if tbs, ok := encodeLeafTBS(tmpl, t.parent.RawSubject, t.parent.SubjectKeyId, t.alg.algID, pub); ok {
		return tbs, nil
	}
	return t.buildWithGo(tmpl, pub)
}

// buildWithGo has x509.CreateCertificate build the TBS, signed with the
// throwaway key and relabelled: every template, CA certificates included.
func (t *tbsBuilder) buildWithGo(tmpl *x509.Certificate, pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, t.parent, pub, t.key)
	if err != nil {
		return nil, fmt.Errorf("build certificate: %w", err)
	}
	tbs, err := replaceTBSSignatureAlgorithm(der, t.alg.algID)
	if err != nil {
		return nil, fmt.Errorf("build certificate: %w", err)
	}
	return tbs, nil
}

// replaceTBSSignatureAlgorithm takes a DER certificate and returns its
// TBSCertificate with the signature field (RFC 5280 §4.1.2.3, the third
// element after version and serialNumber) set to algID.
func replaceTBSSignatureAlgorithm(cert, algID []byte) ([]byte, error) {
	in := cryptobyte.String(cert)
	var c, tbs cryptobyte.String
	if !in.ReadASN1(&c, cbasn1.SEQUENCE) || !c.ReadASN1(&tbs, cbasn1.SEQUENCE) {
		return nil, fmt.Errorf("malformed certificate")
	}
	var version, serial cryptobyte.String
	var vTag, sTag cbasn1.Tag
	if !tbs.ReadAnyASN1Element(&version, &vTag) || vTag != cbasn1.Tag(0).Constructed().ContextSpecific() ||
		!tbs.ReadAnyASN1Element(&serial, &sTag) || sTag != cbasn1.INTEGER ||
		!tbs.SkipASN1(cbasn1.SEQUENCE) {
		return nil, fmt.Errorf("malformed TBSCertificate")
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(version)
		b.AddBytes(serial)
		b.AddBytes(algID)
		b.AddBytes(tbs) // issuer, validity, subject, SPKI, extensions
	})
	return b.Bytes()
}

// assembleCertificate wraps TBS bytes and a signature into a DER
// Certificate (RFC 5280 §4.1).
func assembleCertificate(tbs, algID, sig []byte) ([]byte, error) {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(tbs)
		b.AddBytes(algID)
		b.AddASN1BitString(sig)
	})
	return b.Bytes()
}

// certSigner signs TBS bytes with the issuer key.
type certSigner struct {
	signer crypto.Signer
	issuer *x509.Certificate
	alg    sigAlg
	n      atomic.Uint64
}

// sign signs tbs and returns the certificate, parsed and as DER.
func (s *certSigner) sign(tbs []byte) (*x509.Certificate, []byte, error) {
	msg := tbs
	if s.alg.hash != 0 {
		h := s.alg.hash.New()
		h.Write(tbs)
		msg = h.Sum(nil)
	}
	var opts crypto.SignerOpts = s.alg.hash
	sig, err := s.signer.Sign(rand.Reader, msg, opts)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: sign certificate: %w", err)
	}
	der, err := assembleCertificate(tbs, s.alg.algID, sig)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: assemble certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: parse issued certificate: %w", err)
	}
	if s.n.Add(1)%s.alg.verifyEvery == 1%s.alg.verifyEvery {
		if err := cert.CheckSignatureFrom(s.issuer); err != nil {
			return nil, nil, fmt.Errorf("ca: the signer returned an invalid signature: %w", err)
		}
	}
	return cert, der, nil
}
