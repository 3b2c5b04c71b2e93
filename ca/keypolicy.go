package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"fmt"
	"strings"
)

// KeyAlgorithm names a subject key algorithm (and curve) an enrolment
// policy may accept, in the spelling of the configuration.
type KeyAlgorithm string

// The algorithms checkPublicKey can certify at all. TS-0003 §10.1.1.1 has
// oneM2M certificates use ECDSA P-256 only; the others are for deployments
// that decide otherwise.
const (
	KeyECDSAP256 KeyAlgorithm = "ecdsa-p256"
	KeyECDSAP384 KeyAlgorithm = "ecdsa-p384"
	KeyRSA       KeyAlgorithm = "rsa" // 2048 to 4096 bits, e = 65537
	KeyEd25519   KeyAlgorithm = "ed25519"
)

// KeyAlgorithms lists every KeyAlgorithm, in the order policies list them.
var KeyAlgorithms = []KeyAlgorithm{KeyECDSAP256, KeyECDSAP384, KeyRSA, KeyEd25519}

var keyAlgorithmNames = map[KeyAlgorithm]string{
	KeyECDSAP256: "ECDSA P-256", KeyECDSAP384: "ECDSA P-384", KeyRSA: "RSA 2048-4096", KeyEd25519: "Ed25519",
}

// KeyPolicy is the set of subject key algorithms an enrolment accepts,
// narrower than or equal to what the CA can certify. The zero value accepts
// ECDSA P-256 only (TS-0003 §10.1.1.1).
type KeyPolicy struct {
	allowed []KeyAlgorithm
}

// NewKeyPolicy accepts exactly algs; none means the default, P-256 only.
func NewKeyPolicy(algs []string) (KeyPolicy, error) {
	var p KeyPolicy
	seen := map[KeyAlgorithm]bool{}
	for _, a := range algs {
		k := KeyAlgorithm(strings.ToLower(strings.TrimSpace(a)))
		if _, ok := keyAlgorithmNames[k]; !ok {
			return KeyPolicy{}, fmt.Errorf("key algorithm %q: want one of ecdsa-p256, ecdsa-p384, rsa, ed25519", a)
		}
		if !seen[k] {
			seen[k] = true
			p.allowed = append(p.allowed, k)
		}
	}
	return p, nil
}

// Allowed lists the accepted algorithms.
func (p KeyPolicy) Allowed() []KeyAlgorithm {
	if len(p.allowed) == 0 {
		return []KeyAlgorithm{KeyECDSAP256}
	}
	return append([]KeyAlgorithm(nil), p.allowed...)
}

func (p KeyPolicy) allows(k KeyAlgorithm) bool {
	for _, a := range p.Allowed() {
		if a == k {
			return true
		}
	}
	return false
}

// String is the accepted algorithms for humans: "ECDSA P-256, Ed25519".
func (p KeyPolicy) String() string {
	var names []string
	for _, a := range p.Allowed() {
		names = append(names, keyAlgorithmNames[a])
	}
	return strings.Join(names, ", ")
}

// keyAlgorithmOf classifies a key checkPublicKey accepted.
func keyAlgorithmOf(pub crypto.PublicKey) (KeyAlgorithm, string) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return KeyECDSAP256, keyAlgorithmNames[KeyECDSAP256]
		case elliptic.P384():
			return KeyECDSAP384, keyAlgorithmNames[KeyECDSAP384]
		}
	case *rsa.PublicKey:
		return KeyRSA, fmt.Sprintf("RSA %d", k.N.BitLen())
	case ed25519.PublicKey:
		return KeyEd25519, keyAlgorithmNames[KeyEd25519]
	}
	return "", keyTypeName(pub)
}

// ParseCSRFor is ParseCSR under an enrolment's key policy: a key the CA
// could certify but the policy refuses is refused (ErrUnsupportedKey,
// naming the key and what the policy accepts) before the self-signature is
// checked, as the CA's own key checks are.
func ParseCSRFor(der []byte, p KeyPolicy) (*CSR, error) {
	csr, alg, err := parseCSRWith(der, func(pub crypto.PublicKey) error {
		if k, name := keyAlgorithmOf(pub); !p.allows(k) {
			return newErr(ErrUnsupportedKey, nil, "csr: %s keys are refused by this SP's key policy, which accepts %s", name, p.String())
		}
		return nil
	})
	var e *Error
	if errors.As(err, &e) && errors.Is(err, ErrUnsupportedKey) && !strings.Contains(e.Reason, "key policy") {
		e.Reason += "; this SP's key policy accepts " + p.String()
	}
	if err != nil {
		return nil, err
	}
	return &CSR{req: csr, alg: alg}, nil
}
