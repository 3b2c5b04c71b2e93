package ca

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"time"
)

// backdate absorbs clock skew between the CA and relying parties: a device
// whose clock runs a little behind must not see a fresh certificate as "not
// yet valid".
const backdate = time.Minute

// NewRootTemplate returns the template CreateRoot signs, so a ceremony can
// show (and an auditor can record) exactly what will be signed before the HSM
// key is used.
func NewRootTemplate(pub crypto.PublicKey, subject pkix.Name, validity time.Duration, now time.Time) (*x509.Certificate, error) {
	if _, err := checkPublicKey(pub); err != nil {
		return nil, fmt.Errorf("ca: root key: %w", err)
	}
	if validity <= 0 {
		return nil, fmt.Errorf("ca: root validity %v must be positive", validity)
	}
	ski, err := subjectKeyID(pub)
	if err != nil {
		return nil, err
	}
	serial, err := newSerial(rand.Reader)
	if err != nil {
		return nil, err
	}
	return &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subject,
		NotBefore:             now.Add(-backdate).UTC(),
		NotAfter:              now.Add(validity).UTC(),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// No path length limit: the root must be able to certify both the
		// issuing CA (pathlen 0) and CAs that themselves certify OBF
		// sub-CAs.
		MaxPathLen:   -1,
		SubjectKeyId: ski,
	}, nil
}

// CreateRoot self-signs a root certificate with signer (typically an HSM key
// during `credfactory init`).
func CreateRoot(signer crypto.Signer, subject pkix.Name, validity time.Duration, now time.Time) (*x509.Certificate, error) {
	if signer == nil {
		return nil, fmt.Errorf("ca: create root: nil signer")
	}
	tmpl, err := NewRootTemplate(signer.Public(), subject, validity, now)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, signer.Public(), signer)
	if err != nil {
		return nil, fmt.Errorf("ca: sign root certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: parse new root certificate: %w", err)
	}
	return cert, nil
}

// CreateIntermediate certifies pub as an issuing CA under parent. The result
// may only issue end-entity certificates (path length 0), which is what the
// online issuing key should be limited to: if it leaks, it cannot mint
// further CAs.
func CreateIntermediate(parent *x509.Certificate, parentSigner crypto.Signer, pub crypto.PublicKey, subject pkix.Name, validity time.Duration, now time.Time) (*x509.Certificate, error) {
	return createIntermediate(parent, parentSigner, pub, subject, validity, now, 0, nil, caConstraints{})
}

// CreateIssuingCA is CreateIntermediate for the CA that signs AE-ID and
// CSE-ID certificates: TS-0003 §10.1.1.5 has it carry name constraints
// that the host of the AE-ID's full URI satisfies, so its URI names are
// confined to spDomain (critical, RFC 5280 §4.2.1.10: OpenSSL and Go
// both match the host of a URI with a scheme). DNS names and IP addresses
// stay unconstrained: the same CA signs the SP's own server certificates,
// whose names are configuration.
func CreateIssuingCA(parent *x509.Certificate, parentSigner crypto.Signer, pub crypto.PublicKey, subject pkix.Name, validity time.Duration, now time.Time, spDomain string) (*x509.Certificate, error) {
	uri, err := checkConstraints("URI", []string{spDomain})
	if err != nil {
		return nil, fmt.Errorf("ca: create issuing CA: %w", err)
	}
	return createIntermediate(parent, parentSigner, pub, subject, validity, now, 0, nil, caConstraints{permittedURIs: uri})
}

// CreateOBFCA certifies pub as the CA that certifies trusted OBFs' mTLS
// client certificates (profile ProfileOBFClient; before the sub-CA mode
// was retired, also OBS sub-CAs, hence path length 1). Client
// authentication is its only extended key usage, so nothing under it can
// serve TLS. Its key signs when an sp-admin registers a trusted OBF, and
// its CRLs and OCSP answers.
func CreateOBFCA(parent *x509.Certificate, parentSigner crypto.Signer, pub crypto.PublicKey, subject pkix.Name, validity time.Duration, now time.Time) (*x509.Certificate, error) {
	return createIntermediate(parent, parentSigner, pub, subject, validity, now, 1, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, caConstraints{})
}

// caConstraints are an intermediate's name constraints (RFC 5280
// §4.2.1.10), critical when there are any.
type caConstraints struct {
	permittedURIs []string
	// noHostNames excludes every DNS name and IP address (nodeca.go).
	noHostNames bool
}

func createIntermediate(parent *x509.Certificate, parentSigner crypto.Signer, pub crypto.PublicKey, subject pkix.Name, validity time.Duration, now time.Time, pathLen int, eku []x509.ExtKeyUsage, nc caConstraints) (*x509.Certificate, error) {
	if parent == nil || parentSigner == nil {
		return nil, fmt.Errorf("ca: create intermediate: nil parent certificate or signer")
	}
	if err := checkIssuerCert(parent); err != nil {
		return nil, fmt.Errorf("ca: create intermediate: %w", err)
	}
	if err := CheckSignerMatches(parent, parentSigner); err != nil {
		return nil, fmt.Errorf("ca: create intermediate: %w", err)
	}
	if pathLenZero(parent) {
		return nil, newErr(ErrPolicy, nil, "parent %q has path length 0 and cannot certify a CA", parent.Subject.String())
	}
	if _, err := checkPublicKey(pub); err != nil {
		return nil, fmt.Errorf("ca: intermediate key: %w", err)
	}
	notBefore, notAfter, err := clampValidity(parent, validity, now)
	if err != nil {
		return nil, fmt.Errorf("ca: create intermediate: %w", err)
	}
	ski, err := subjectKeyID(pub)
	if err != nil {
		return nil, err
	}
	serial, err := newSerial(rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      subject,
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		// digitalSignature lets the issuing key also sign OCSP responses
		// directly (RFC 6960 §4.2.2.2 responder = issuer), so no delegated
		// responder certificate is needed.
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            pathLen,
		MaxPathLenZero:        pathLen == 0,
		ExtKeyUsage:           eku,
		SubjectKeyId:          ski,
		PermittedURIDomains:   nc.permittedURIs,
	}
	if nc.noHostNames {
		tmpl.ExcludedDNSDomains, tmpl.ExcludedIPRanges = excludeAllHostNames()
	}
	if len(nc.permittedURIs) > 0 || nc.noHostNames {
		tmpl.PermittedDNSDomainsCritical = true // Go's name for "nameConstraints is critical"
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentSigner)
	if err != nil {
		return nil, fmt.Errorf("ca: sign intermediate certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: parse new intermediate certificate: %w", err)
	}
	return cert, nil
}

// CheckSignerMatches reports (as an *Error of kind ErrSignerMismatch) whether
// signer's public key is not the one certified by cert. Run it whenever an
// HSM key is paired with a certificate, so a mistyped key label or URI fails
// loudly at start-up instead of producing certificates nobody can verify.
func CheckSignerMatches(cert *x509.Certificate, signer crypto.Signer) error {
	if cert == nil || signer == nil {
		return newErr(ErrSignerMismatch, nil, "nil certificate or signer")
	}
	pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok {
		return newErr(ErrSignerMismatch, nil, "signer public key type %T cannot be compared", signer.Public())
	}
	if !pub.Equal(cert.PublicKey) {
		got, _ := subjectKeyID(signer.Public())
		return newErr(ErrSignerMismatch, nil,
			"signer key (key id %s) is not the key of certificate %q (key id %s)",
			hex.EncodeToString(got), cert.Subject.String(), hex.EncodeToString(cert.SubjectKeyId))
	}
	return nil
}

// checkIssuerCert refuses certificates that relying parties would not accept
// as an issuer, so the mistake surfaces when the CA is configured rather than
// as unverifiable certificates in the field.
func checkIssuerCert(c *x509.Certificate) error {
	if !c.BasicConstraintsValid || !c.IsCA {
		return fmt.Errorf("certificate %q is not a CA certificate", c.Subject.String())
	}
	if c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageCertSign == 0 {
		return fmt.Errorf("certificate %q lacks the keyCertSign key usage", c.Subject.String())
	}
	if len(c.SubjectKeyId) == 0 {
		// RFC 5280 §4.2.1.2: CA certificates MUST carry an SKI; without it
		// our certificates would lack an authority key identifier.
		return fmt.Errorf("certificate %q has no subject key identifier", c.Subject.String())
	}
	return nil
}

// clampValidity computes [notBefore, notAfter] for a certificate issued by
// issuer at now, keeping it inside the issuer's own validity: RFC 5280 does
// not forbid outliving the issuer, but such a certificate silently stops
// verifying when the issuer expires, which is worse than a visibly shorter
// lifetime.
func clampValidity(issuer *x509.Certificate, validity time.Duration, now time.Time) (time.Time, time.Time, error) {
	if validity <= 0 {
		return time.Time{}, time.Time{}, newErr(ErrPolicy, nil, "validity %v must be positive", validity)
	}
	if !now.Before(issuer.NotAfter) {
		return time.Time{}, time.Time{}, newErr(ErrPolicy, nil,
			"issuer %q expired at %s", issuer.Subject.String(), issuer.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(issuer.NotBefore) {
		return time.Time{}, time.Time{}, newErr(ErrPolicy, nil,
			"issuer %q is not valid before %s", issuer.Subject.String(), issuer.NotBefore.UTC().Format(time.RFC3339))
	}
	notBefore := now.Add(-backdate)
	if notBefore.Before(issuer.NotBefore) {
		notBefore = issuer.NotBefore
	}
	notAfter := now.Add(validity)
	if notAfter.After(issuer.NotAfter) {
		notAfter = issuer.NotAfter
	}
	return notBefore.UTC(), notAfter.UTC(), nil
}

// pathLenZero reports whether c may only certify end entities. A parsed
// certificate says so with MaxPathLen 0 and MaxPathLenZero; MaxPathLen -1
// means "no limit".
func pathLenZero(c *x509.Certificate) bool {
	return c.MaxPathLen == 0 && c.MaxPathLenZero
}
