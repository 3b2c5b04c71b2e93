package ca

import (
	"bytes"
	"crypto"
	"crypto/dsa" //nolint:staticcheck // only to name DSA keys in refusals
	"crypto/ecdh"
	"crypto/x509"
	encasn1 "encoding/asn1"
	"errors"
	"unicode/utf8"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Limits on what we are willing to parse. They bound the CPU and memory an
// unauthenticated client can make us spend (the CSR arrives before the token
// has been checked) and reject inputs no honest device produces.
const (
	// MaxCSRSize bounds the DER CSR. An RSA-4096 CSR with a handful of
	// SANs is well under 2 KiB; 8 KiB leaves room for attributes.
	MaxCSRSize = 8 << 10
	// maxCommonNameLen is ub-common-name from RFC 5280 Appendix A.
	maxCommonNameLen = 64
	// maxSANs bounds SANs in a CSR and in a Request: name-constraint
	// checking in relying parties is quadratic in names x constraints.
	maxSANs = 100
)

// CSR is a certificate request that ParseCSR accepted: parsed, its key
// allowed by policy, its self-signature verified. Issue takes it as it is, so
// a caller that has to read the request before issuing (the MEF finds the
// enrolment token inside it) does not pay for the parse and the signature
// check twice.
type CSR struct {
	req *x509.CertificateRequest
	alg x509.PublicKeyAlgorithm
}

// Request is the parsed PKCS#10 request; callers must not modify it.
func (c *CSR) Request() *x509.CertificateRequest { return c.req }

// ParseCSR turns untrusted DER into a CSR whose key we accept and whose
// self-signature verifies; refusals are *Error values as Issue's are.
func ParseCSR(der []byte) (*CSR, error) {
	csr, alg, err := parseCSR(der)
	if err != nil {
		return nil, err
	}
	return &CSR{req: csr, alg: alg}, nil
}

// parseCSR runs the cheap checks (size, key policy, name counts) before the
// signature check, so that a CSR we would refuse anyway (RSA-8192, 10,000
// SANs) costs us a parse, not an expensive verification.
func parseCSR(der []byte) (*x509.CertificateRequest, x509.PublicKeyAlgorithm, error) {
	switch {
	case len(der) == 0:
		return nil, 0, newErr(ErrBadCSR, nil, "csr: empty")
	case len(der) > MaxCSRSize:
		return nil, 0, newErr(ErrBadCSR, nil, "csr: %d bytes exceeds the %d-byte limit", len(der), MaxCSRSize)
	case bytes.HasPrefix(bytes.TrimSpace(der), []byte("-----BEGIN")):
		return nil, 0, newErr(ErrBadCSR, nil, "csr: got PEM, want DER")
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		// Go refuses to parse keys on curves it does not implement; tell
		// the client that its key is the problem, not its encoding.
		if name, ok := sniffUnsupportedKey(der); ok {
			return nil, 0, newErr(ErrUnsupportedKey, nil, "csr: %s keys are not supported", name)
		}
		return nil, 0, newErr(ErrBadCSR, err, "csr: malformed")
	}
	if csr.PublicKey == nil {
		return nil, 0, newErr(ErrUnsupportedKey, nil, "csr: %s keys are not supported",
			describeSPKI(csr.RawSubjectPublicKeyInfo))
	}
	alg, err := checkPublicKey(csr.PublicKey)
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			e.Reason = "csr: " + e.Reason
		}
		return nil, 0, err
	}
	if n := utf8.RuneCountInString(csr.Subject.CommonName); n > maxCommonNameLen {
		return nil, 0, newErr(ErrBadCSR, nil, "csr: subject common name of %d characters exceeds the %d-character limit", n, maxCommonNameLen)
	}
	if n := len(csr.DNSNames) + len(csr.EmailAddresses) + len(csr.IPAddresses) + len(csr.URIs); n > maxSANs {
		return nil, 0, newErr(ErrBadCSR, nil, "csr: %d subject alternative names exceed the limit of %d", n, maxSANs)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, 0, newErr(ErrBadCSR, err, "csr: signature does not verify")
	}
	return csr, alg, nil
}

// keyTypeName names key types Go parses but we refuse, so that the refusal
// says "DSA" rather than "*dsa.PublicKey".
func keyTypeName(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *dsa.PublicKey:
		return "DSA"
	case *ecdh.PublicKey:
		if k.Curve() == ecdh.X25519() {
			return "X25519"
		}
		return "ECDH"
	default:
		return "unknown"
	}
}

var (
	oidECPublicKey = encasn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}
	oidAlgNames    = map[string]string{
		"1.2.840.10040.4.1":     "DSA",
		"1.2.840.113549.1.1.1":  "RSA",
		"1.2.840.113549.1.1.10": "RSASSA-PSS",
		"1.3.101.110":           "X25519",
		"1.3.101.111":           "X448",
		"1.3.101.112":           "Ed25519",
		"1.3.101.113":           "Ed448",
		"1.2.156.10197.1.301":   "SM2",
	}
	oidCurveNames = map[string]string{
		"1.2.840.10045.3.1.7":   "ECDSA P-256",
		"1.3.132.0.34":          "ECDSA P-384",
		"1.3.132.0.10":          "ECDSA secp256k1",
		"1.3.132.0.33":          "ECDSA P-224",
		"1.3.132.0.35":          "ECDSA P-521",
		"1.2.840.10045.3.1.1":   "ECDSA P-192",
		"1.3.36.3.3.2.8.1.1.7":  "ECDSA brainpoolP256r1",
		"1.3.36.3.3.2.8.1.1.11": "ECDSA brainpoolP384r1",
		"1.3.36.3.3.2.8.1.1.13": "ECDSA brainpoolP512r1",
		"1.2.156.10197.1.301":   "ECDSA SM2",
	}
)

// describeSPKI names the algorithm (and curve) of a DER subjectPublicKeyInfo
// from its OIDs alone, for keys Go cannot or will not decode.
func describeSPKI(spki []byte) string {
	in := cryptobyte.String(spki)
	var seq, alg cryptobyte.String
	var oid encasn1.ObjectIdentifier
	if !in.ReadASN1(&seq, cbasn1.SEQUENCE) || !seq.ReadASN1(&alg, cbasn1.SEQUENCE) ||
		!alg.ReadASN1ObjectIdentifier(&oid) {
		return "unparseable"
	}
	if oid.Equal(oidECPublicKey) {
		var curve encasn1.ObjectIdentifier
		if !alg.ReadASN1ObjectIdentifier(&curve) {
			return "ECDSA (explicit or missing curve parameters)"
		}
		if n, ok := oidCurveNames[curve.String()]; ok {
			return n
		}
		return "ECDSA curve " + curve.String()
	}
	if n, ok := oidAlgNames[oid.String()]; ok {
		return n
	}
	return "algorithm " + oid.String()
}

// sniffUnsupportedKey digs the subjectPublicKeyInfo out of a CSR that Go
// failed to parse and reports whether it names an algorithm or curve we do
// not support (as opposed to being merely malformed).
func sniffUnsupportedKey(der []byte) (string, bool) {
	in := cryptobyte.String(der)
	var csr, info cryptobyte.String
	var spki cryptobyte.String
	if !in.ReadASN1(&csr, cbasn1.SEQUENCE) || !csr.ReadASN1(&info, cbasn1.SEQUENCE) ||
		!info.SkipASN1(cbasn1.INTEGER) || !info.SkipASN1(cbasn1.SEQUENCE) ||
		!info.ReadASN1Element(&spki, cbasn1.SEQUENCE) {
		return "", false
	}
	name := describeSPKI(spki)
	switch name {
	case "unparseable", "RSA", "Ed25519", "ECDSA P-256", "ECDSA P-384":
		// Supported algorithms: the parse failure is about the encoding.
		return "", false
	}
	return name, true
}
