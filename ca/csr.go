package ca

import (
	"bytes"
	"crypto"
	"crypto/dsa" //nolint:staticcheck // only to name DSA keys in refusals
	"crypto/ecdh"
	"crypto/x509"
	encasn1 "encoding/asn1"
	"errors"
	"fmt"
	"strings"
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
	return parseCSRWith(der, nil)
}

// parseCSRWith is parseCSR with policy, when set, judging the key after
// the CA's own key checks and before the signature check.
func parseCSRWith(der []byte, policy func(crypto.PublicKey) error) (*x509.CertificateRequest, x509.PublicKeyAlgorithm, error) {
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
		// The parser's own words name ASN.1 tags and Go types ("tags
		// don't match (16 vs {class:0 ...})"), and Error repeats the
		// cause to the client: say it in RFC 2986 terms instead.
		return nil, 0, newErr(ErrBadCSR, nil, "csr: malformed: not a DER PKCS#10 CertificationRequest (RFC 2986)")
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
	if policy != nil {
		if err := policy(csr.PublicKey); err != nil {
			return nil, 0, err
		}
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

// grant is what a profile puts in a certificate that a CSR may also ask for:
// a CSR asking for anything else is refused, not silently trimmed (see
// Profile: a requester who asks for serverAuth and gets clientAuth has
// misunderstood its credential, and should hear so).
type grant struct {
	keyUsage x509.KeyUsage
	eku      map[string]bool // dotted OIDs
	ca       bool
	// sans: which subjectAltName kinds the profile may carry.
	dns, ip, uri bool
	// cnIsID: the subject CN is the assigned ID.
	cnIsID bool
}

func (p Profile) grant(alg x509.PublicKeyAlgorithm) (grant, bool) {
	clientAuth := map[string]bool{oidEKUClientAuth: true}
	switch p {
	case ProfileDevice, ProfileNodeID:
		return grant{keyUsage: x509.KeyUsageDigitalSignature, eku: clientAuth, uri: true, cnIsID: true}, true
	case ProfileCSE:
		ku := x509.KeyUsageDigitalSignature
		if alg == x509.RSA {
			ku |= x509.KeyUsageKeyEncipherment
		}
		return grant{keyUsage: ku, eku: map[string]bool{oidEKUServerAuth: true, oidEKUClientAuth: true}, dns: true, uri: true, cnIsID: true}, true
	case ProfileOBFClient:
		return grant{keyUsage: x509.KeyUsageDigitalSignature, eku: clientAuth, dns: true, uri: true, cnIsID: true}, true
	case ProfileOBFSubCA:
		return grant{keyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
			eku: clientAuth, ca: true, cnIsID: true}, true
	case ProfileServer:
		ku := x509.KeyUsageDigitalSignature
		if alg == x509.RSA {
			ku |= x509.KeyUsageKeyEncipherment
		}
		return grant{keyUsage: ku, eku: map[string]bool{oidEKUServerAuth: true}, dns: true, ip: true}, true
	}
	return grant{}, false
}

const (
	oidEKUServerAuth = "1.3.6.1.5.5.7.3.1"
	oidEKUClientAuth = "1.3.6.1.5.5.7.3.2"
)

var (
	ekuNames = map[string]string{
		oidEKUServerAuth:    "serverAuth",
		oidEKUClientAuth:    "clientAuth",
		"1.3.6.1.5.5.7.3.3": "codeSigning",
		"1.3.6.1.5.5.7.3.4": "emailProtection",
		"1.3.6.1.5.5.7.3.8": "timeStamping",
		"1.3.6.1.5.5.7.3.9": "OCSPSigning",
		"2.5.29.37.0":       "anyExtendedKeyUsage",
	}
	// keyUsageNames are RFC 5280 §4.2.1.3's, by bit.
	keyUsageNames = []string{"digitalSignature", "contentCommitment", "keyEncipherment", "dataEncipherment",
		"keyAgreement", "keyCertSign", "cRLSign", "encipherOnly", "decipherOnly"}
	extensionNames = map[string]string{
		"2.5.29.14":             "subjectKeyIdentifier",
		"2.5.29.15":             "keyUsage",
		"2.5.29.17":             "subjectAltName",
		"2.5.29.19":             "basicConstraints",
		"2.5.29.30":             "nameConstraints",
		"2.5.29.31":             "cRLDistributionPoints",
		"2.5.29.32":             "certificatePolicies",
		"2.5.29.35":             "authorityKeyIdentifier",
		"2.5.29.37":             "extKeyUsage",
		"1.3.6.1.5.5.7.1.1":     "authorityInfoAccess",
		"1.3.6.1.5.5.7.1.3":     "qcStatements",
		"2.16.840.1.113730.1.1": "netscapeCertType",
		"1.3.6.1.5.5.7.48.1.5":  "ocspNoCheck",
	}
)

func extensionName(oid encasn1.ObjectIdentifier) string {
	if n, ok := extensionNames[oid.String()]; ok {
		return n + " (" + oid.String() + ")"
	}
	return "extension " + oid.String()
}

// CheckFor refuses a CSR that asks for anything profile p would not put in
// the certificate, naming what was refused: an extended key usage, a key
// usage bit, CA status, a kind of subjectAltName, any other extension, or
// a subject common name other than assignedID (for the profiles whose CN
// is the assigned ID; an empty CN is fine). Which URI SAN is right is the
// caller's to check (it knows the SP's domain). Refusals are *Error of
// kind ErrPolicy.
func (c *CSR) CheckFor(p Profile, assignedID string) error {
	g, ok := p.grant(c.alg)
	if !ok {
		return newErr(ErrPolicy, nil, "unknown certificate profile %q", p)
	}
	csr := c.req
	refuse := func(format string, args ...any) error {
		return newErr(ErrPolicy, nil, "csr: asks for %s, which a %s certificate does not have: remove it from the request",
			fmt.Sprintf(format, args...), p)
	}
	if g.cnIsID && csr.Subject.CommonName != "" && csr.Subject.CommonName != assignedID {
		return newErr(ErrPolicy, nil, "csr: subject common name %q is not the assigned ID %q: leave it empty or use the assigned ID",
			csr.Subject.CommonName, assignedID)
	}
	switch {
	case len(csr.DNSNames) > 0 && !g.dns:
		return refuse("a DNS subjectAltName (%s)", csr.DNSNames[0])
	case len(csr.IPAddresses) > 0 && !g.ip:
		return refuse("an IP address subjectAltName (%s)", csr.IPAddresses[0])
	case len(csr.URIs) > 0 && !g.uri:
		return refuse("a URI subjectAltName (%s)", csr.URIs[0])
	case len(csr.EmailAddresses) > 0:
		return refuse("an email subjectAltName")
	}
	for _, ext := range csr.Extensions {
		switch ext.Id.String() {
		case "2.5.29.17", "2.5.29.14":
			// subjectAltName: checked above, as parsed; the key
			// identifier is recomputed from the key whatever was asked.
		case "2.5.29.15":
			ku, err := parseKeyUsage(ext.Value)
			if err != nil {
				return newErr(ErrBadCSR, nil, "csr: the requested keyUsage is not a valid BIT STRING")
			}
			var extra []string
			for bit, name := range keyUsageNames {
				if ku&(1<<bit) != 0 && g.keyUsage&(1<<bit) == 0 {
					extra = append(extra, name)
				}
			}
			if len(extra) > 0 {
				return refuse("key usage %s", strings.Join(extra, ", "))
			}
		case "2.5.29.37":
			oids, err := parseEKU(ext.Value)
			if err != nil {
				return newErr(ErrBadCSR, nil, "csr: the requested extKeyUsage is not a valid list of object identifiers")
			}
			var extra []string
			for _, oid := range oids {
				if !g.eku[oid.String()] {
					name, ok := ekuNames[oid.String()]
					if !ok {
						name = oid.String()
					}
					extra = append(extra, name)
				}
			}
			if len(extra) > 0 {
				return refuse("extended key usage %s", strings.Join(extra, ", "))
			}
		case "2.5.29.19":
			isCA, err := parseBasicConstraints(ext.Value)
			if err != nil {
				return newErr(ErrBadCSR, nil, "csr: the requested basicConstraints is not valid")
			}
			if isCA && !g.ca {
				return refuse("CA status (basicConstraints cA=TRUE)")
			}
		default:
			return refuse("%s", extensionName(ext.Id))
		}
	}
	return nil
}

// parseKeyUsage reads a keyUsage extension value (RFC 5280 §4.2.1.3) into
// x509.KeyUsage bits (bit 0 is digitalSignature).
func parseKeyUsage(der []byte) (x509.KeyUsage, error) {
	in := cryptobyte.String(der)
	var bits encasn1.BitString
	if !in.ReadASN1BitString(&bits) || !in.Empty() {
		return 0, errors.New("keyUsage: not a BIT STRING")
	}
	var ku x509.KeyUsage
	for i := 0; i < bits.BitLength; i++ {
		if bits.At(i) != 0 {
			ku |= 1 << i
		}
	}
	return ku, nil
}

// parseEKU reads an extKeyUsage extension value: SEQUENCE OF OID.
func parseEKU(der []byte) ([]encasn1.ObjectIdentifier, error) {
	in := cryptobyte.String(der)
	var seq cryptobyte.String
	if !in.ReadASN1(&seq, cbasn1.SEQUENCE) || !in.Empty() {
		return nil, errors.New("extKeyUsage: not a SEQUENCE")
	}
	var out []encasn1.ObjectIdentifier
	for !seq.Empty() {
		var oid encasn1.ObjectIdentifier
		if !seq.ReadASN1ObjectIdentifier(&oid) {
			return nil, errors.New("extKeyUsage: not an OID")
		}
		out = append(out, oid)
	}
	return out, nil
}

// parseBasicConstraints reads cA from a basicConstraints extension value.
func parseBasicConstraints(der []byte) (bool, error) {
	in := cryptobyte.String(der)
	var seq cryptobyte.String
	if !in.ReadASN1(&seq, cbasn1.SEQUENCE) || !in.Empty() {
		return false, errors.New("basicConstraints: not a SEQUENCE")
	}
	isCA := false
	if seq.PeekASN1Tag(cbasn1.BOOLEAN) && !seq.ReadASN1Boolean(&isCA) {
		return false, errors.New("basicConstraints: bad cA")
	}
	if seq.PeekASN1Tag(cbasn1.INTEGER) && !seq.SkipASN1(cbasn1.INTEGER) {
		return false, errors.New("basicConstraints: bad pathLen")
	}
	if !seq.Empty() {
		return false, errors.New("basicConstraints: trailing data")
	}
	return isCA, nil
}
