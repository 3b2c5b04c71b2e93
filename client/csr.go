package client

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
	"errors"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

var (
	oidChallengePassword = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 7}
	oidExtensionRequest  = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 14}
	oidECDSAWithSHA256   = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidECDSAWithSHA384   = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}
	oidSHA256WithRSA     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}
	oidEd25519           = asn1.ObjectIdentifier{1, 3, 101, 112}
)

// CSR builds a PKCS#10 request whose challengePassword attribute carries the
// enrolment token, as TS-0003 §8.3.6 has EST carry it. Go's x509 cannot write
// CSR attributes other than extension requests, so the request is assembled
// here: CertificationRequestInfo (RFC 2986 §4.1), then the signature.
//
// extensions, if any, go in an extensionRequest attribute (PKCS#9): the
// device profile decides the certificate, so a device needs none; they are
// here for clients that must ask anyway, and for testing refusals.
func CSR(key crypto.Signer, commonName, challengePassword string, extensions ...pkix.Extension) ([]byte, error) {
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, fmt.Errorf("csr: public key: %w", err)
	}
	subject, err := asn1.Marshal(pkix.Name{CommonName: commonName}.ToRDNSequence())
	if err != nil {
		return nil, fmt.Errorf("csr: subject: %w", err)
	}
	var extReq []byte
	if len(extensions) > 0 {
		if extReq, err = asn1.Marshal(extensions); err != nil {
			return nil, fmt.Errorf("csr: extensions: %w", err)
		}
	}
	var info cryptobyte.Builder
	info.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1Int64(0)
		b.AddBytes(subject)
		b.AddBytes(spki)
		b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
			if challengePassword != "" {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1ObjectIdentifier(oidChallengePassword)
					b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
						b.AddASN1(cbasn1.UTF8String, func(b *cryptobyte.Builder) { b.AddBytes([]byte(challengePassword)) })
					})
				})
			}
			if extReq != nil {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1ObjectIdentifier(oidExtensionRequest)
					b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) { b.AddBytes(extReq) })
				})
			}
		})
	})
	tbs, err := info.Bytes()
	if err != nil {
		return nil, fmt.Errorf("csr: %w", err)
	}
	alg, hash, err := signatureAlgorithm(key.Public())
	if err != nil {
		return nil, err
	}
	digest := tbs
	var opts crypto.SignerOpts = hash
	if hash != 0 {
		h := hash.New()
		h.Write(tbs)
		digest = h.Sum(nil)
	} else {
		opts = crypto.Hash(0)
	}
	sig, err := key.Sign(rand.Reader, digest, opts)
	if err != nil {
		return nil, fmt.Errorf("csr: sign: %w", err)
	}
	var out cryptobyte.Builder
	out.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(tbs)
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(alg)
			if _, ok := key.Public().(*rsa.PublicKey); ok {
				b.AddASN1NULL()
			}
		})
		b.AddASN1BitString(sig)
	})
	return out.Bytes()
}

func signatureAlgorithm(pub crypto.PublicKey) (asn1.ObjectIdentifier, crypto.Hash, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P384() {
			return oidECDSAWithSHA384, crypto.SHA384, nil
		}
		return oidECDSAWithSHA256, crypto.SHA256, nil
	case *rsa.PublicKey:
		return oidSHA256WithRSA, crypto.SHA256, nil
	case ed25519.PublicKey:
		return oidEd25519, 0, nil
	}
	return nil, 0, errors.New("csr: key type not supported (ECDSA, RSA or Ed25519)")
}
