package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"time"
)

// Config describes one issuing CA.
type Config struct {
	// Issuer is the certificate of the key behind Signer.
	Issuer *x509.Certificate
	// Signer signs every certificate; in production an HSM key. It is used
	// concurrently, so it must be safe for concurrent use.
	Signer crypto.Signer
	// Chain is Issuer's certificate path towards the root, issuer first:
	// [Issuer, parent, ...]. It may be empty (meaning [Issuer]) and may end
	// with the self-signed root; any self-signed certificate is dropped
	// because relying parties must get the trust anchor out of band
	// (RFC 8446 §4.4.2, RFC 7030 §4.1.3 serves it separately), so a chain
	// that carries it only costs bytes on every handshake. Each element
	// must be signed by the next.
	Chain []*x509.Certificate
	// Lint runs zlint on every TBSCertificate before the issuer key signs
	// exactly those bytes (sign.go), and refuses issuance on any lint
	// error. It costs CPU (see BenchmarkIssue) but no HSM time.
	Lint bool
	// Now returns the current time; nil means time.Now. Tests set it.
	Now func() time.Time
	// CRLURL and OCSPURL, when set, are written into every certificate
	// this CA issues (CRL distribution point, AIA OCSP): TS-0003 §8.1.2.2
	// requires entities to check a CRL for MEF-issued certificates, so
	// they must learn where it is.
	CRLURL  string
	OCSPURL string
	// Audit receives a record before and after every signature (audit.go);
	// nil records nothing.
	Audit *slog.Logger
	// Profiles, when set, are the only profiles this CA issues (the node
	// CA's is ProfileNodeID alone, nodeca.go); empty allows every one.
	Profiles []Profile
}

// CA issues certificates from one issuer key. It is safe for concurrent use.
type CA struct {
	issuer *x509.Certificate
	signer crypto.Signer
	chain  []*x509.Certificate
	now    func() time.Time
	crl    []string
	ocsp   []string
	linter *linter
	tbs    *tbsBuilder
	certs  *certSigner
	audit  *slog.Logger
	// profiles: Config.Profiles.
	profiles []Profile
	// issuerHashes and responderKeyHash identify the issuer in OCSP
	// (ocsp.go), computed once.
	issuerHashes     map[crypto.Hash]issuerHash
	responderKeyHash []byte
	// ocspHash and ocspSigAlg are how OCSP responses are signed: fixed by
	// the issuer key, so worked out once, not per response (ocspAlgErr
	// when the key type cannot sign them).
	ocspHash   crypto.Hash
	ocspSigAlg []byte
	ocspAlgErr error
}

// Issued is the result of a successful issuance.
type Issued struct {
	Certificate *x509.Certificate
	DER         []byte
	// Chain is the issuer's path, issuer first, without the root: append
	// it after the leaf to form a TLS or EST certificate list. It is empty
	// when the issuer is itself the root.
	Chain []*x509.Certificate
}

// New checks cfg and builds a CA. The signer must match the issuer
// certificate (ErrSignerMismatch otherwise).
func New(cfg Config) (*CA, error) {
	if cfg.Issuer == nil {
		return nil, fmt.Errorf("ca: config: no issuer certificate")
	}
	if cfg.Signer == nil {
		return nil, fmt.Errorf("ca: config: no signer")
	}
	if err := checkIssuerCert(cfg.Issuer); err != nil {
		return nil, fmt.Errorf("ca: config: %w", err)
	}
	if _, err := checkPublicKey(cfg.Issuer.PublicKey); err != nil {
		return nil, fmt.Errorf("ca: config: issuer key: %w", err)
	}
	if err := CheckSignerMatches(cfg.Issuer, cfg.Signer); err != nil {
		return nil, fmt.Errorf("ca: config: %w", err)
	}
	chain, err := buildChain(cfg.Issuer, cfg.Chain)
	if err != nil {
		return nil, fmt.Errorf("ca: config: %w", err)
	}
	c := &CA{issuer: cfg.Issuer, signer: cfg.Signer, chain: chain, now: cfg.Now, audit: cfg.Audit, profiles: cfg.Profiles}
	if c.issuerHashes, c.responderKeyHash, err = ocspIdentity(cfg.Issuer); err != nil {
		return nil, fmt.Errorf("ca: config: %w", err)
	}
	c.ocspHash, c.ocspSigAlg, c.ocspAlgErr = signatureAlgorithm(cfg.Signer.Public())
	if c.now == nil {
		c.now = time.Now
	}
	if cfg.CRLURL != "" {
		if err := checkHTTPURL(cfg.CRLURL); err != nil {
			return nil, fmt.Errorf("ca: config: CRL URL: %w", err)
		}
		c.crl = []string{cfg.CRLURL}
	}
	if cfg.OCSPURL != "" {
		if err := checkHTTPURL(cfg.OCSPURL); err != nil {
			return nil, fmt.Errorf("ca: config: OCSP URL: %w", err)
		}
		c.ocsp = []string{cfg.OCSPURL}
	}
	alg, err := signatureAlgorithmFor(cfg.Issuer.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("ca: config: %w", err)
	}
	if c.tbs, err = newTBSBuilder(cfg.Issuer, alg); err != nil {
		return nil, fmt.Errorf("ca: config: %w", err)
	}
	c.certs = &certSigner{signer: cfg.Signer, issuer: cfg.Issuer, alg: alg}
	if cfg.Lint {
		if c.linter, err = newLinter(alg); err != nil {
			return nil, fmt.Errorf("ca: config: %w", err)
		}
	}
	return c, nil
}

// Issuer returns the issuing CA's certificate.
func (c *CA) Issuer() *x509.Certificate { return c.issuer }

// Chain returns the issuer's chain (issuer first, root excluded).
func (c *CA) Chain() []*x509.Certificate { return append([]*x509.Certificate(nil), c.chain...) }

// Issue certifies the CSR's public key as req.Profile dictates. Refusals are
// *Error values of kind ErrBadCSR, ErrUnsupportedKey (ErrWeakKey) or
// ErrPolicy; other errors (signer failure, cancelled ctx) are wrapped as is.
func (c *CA) Issue(ctx context.Context, req Request) (*Issued, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("ca: issue: %w", err)
	}
	parsed := req.Parsed
	if parsed == nil {
		var err error
		if parsed, err = ParseCSR(req.CSR); err != nil {
			return nil, err
		}
	}
	csr, alg := parsed.req, parsed.alg
	if len(c.profiles) > 0 && !slices.Contains(c.profiles, req.Profile) {
		return nil, newErr(ErrPolicy, nil, "issuer %q does not issue profile %s", c.issuer.Subject.String(), req.Profile)
	}
	shape, err := req.Profile.shape(&req, alg)
	if err != nil {
		return nil, err
	}
	if len(c.issuer.PermittedURIDomains)+len(c.issuer.ExcludedURIDomains) > 0 {
		for _, u := range shape.uris {
			if u.Scheme == "" {
				// OpenSSL cannot match a scheme-less URI against a URI
				// name constraint and fails the whole chain
				// (X509_V_ERR_UNSUPPORTED_NAME_SYNTAX): such a
				// certificate would be useless to OpenSSL-based peers.
				return nil, newErr(ErrPolicy, nil,
					"URI SAN %q has no scheme, which OpenSSL cannot check against issuer %q's URI name constraints",
					u.String(), c.issuer.Subject.String())
			}
			if u.Host == "" {
				// A URN (a Node-ID) under a URI name constraint: Go
				// and OpenSSL both refuse the chain; the node CA signs
				// those (nodeca.go).
				return nil, newErr(ErrPolicy, nil,
					"URI SAN %q has no host, which Go and OpenSSL cannot check against issuer %q's URI name constraints",
					u.String(), c.issuer.Subject.String())
			}
		}
	}
	if shape.isCA && pathLenZero(c.issuer) {
		return nil, newErr(ErrPolicy, nil, "issuer %q has path length 0 and cannot certify a CA", c.issuer.Subject.String())
	}
	notBefore, notAfter, err := clampValidity(c.issuer, shape.validity, c.now())
	if err != nil {
		return nil, err
	}
	ski, err := subjectKeyIDFromSPKI(csr.RawSubjectPublicKeyInfo)
	if err != nil {
		return nil, newErr(ErrBadCSR, err, "csr: subject public key")
	}
	serial, err := newSerial(rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               shape.subject,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              shape.keyUsage,
		ExtKeyUsage:           shape.extKeyUsage,
		BasicConstraintsValid: true,
		IsCA:                  shape.isCA,
		SubjectKeyId:          ski,
		DNSNames:              shape.dnsNames,
		IPAddresses:           shape.ips,
		URIs:                  shape.uris,
	}
	if req.Profile == ProfileDevice || req.Profile == ProfileCSE || req.Profile == ProfileNodeID || req.Profile == ProfileOBFClient {
		// Device and OBF client certificates are what the registry
		// records (credentials, obf_certificates), so only they can be
		// listed on the CRL or answered by OCSP: on server certificates
		// the pointers would earn relying parties an "unknown" and
		// nothing else (those are withdrawn by renewal).
		tmpl.CRLDistributionPoints = c.crl
		tmpl.OCSPServer = c.ocsp
	}
	if shape.isCA {
		// The OBS sub-CA issues device certificates only, never further
		// CAs, so a compromised OBS key cannot grow the hierarchy.
		tmpl.MaxPathLen, tmpl.MaxPathLenZero = 0, true
		tmpl.PermittedDNSDomainsCritical = true
		tmpl.PermittedDNSDomains = shape.permDNS
		tmpl.PermittedURIDomains = shape.permURI
		// A name type without a permitted subtree is unconstrained (RFC 5280
		// §4.2.1.10): no device identity is an IP address, so every address
		// is excluded.
		tmpl.ExcludedIPRanges = []*net.IPNet{
			{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
			{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)},
		}
	}

	tbs, err := c.tbs.build(tmpl, csr.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	if c.linter != nil {
		if err := c.linter.check(tbs); err != nil {
			return nil, err
		}
	}
	// The signature is the expensive, HSM-bound step: do not spend it on a
	// request whose caller has already gone.
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("ca: issue: %w", err)
	}
	var cert *x509.Certificate
	var der []byte
	err = c.audited(ctx, "certificate", func() []slog.Attr {
		return []slog.Attr{slog.String("serial", serial.Text(16)), slog.String("profile", string(req.Profile)),
			slog.String("subject", req.AssignedID), slog.String("tbs_sha256", sha256Hex(tbs))}
	}, func() (_ []slog.Attr, err error) {
		cert, der, err = c.certs.sign(tbs)
		return nil, err
	})
	if err != nil {
		return nil, err
	}
	return &Issued{Certificate: cert, DER: der, Chain: c.Chain()}, nil
}

// buildChain validates the configured chain and strips the root (see
// Config.Chain).
func buildChain(issuer *x509.Certificate, in []*x509.Certificate) ([]*x509.Certificate, error) {
	if len(in) == 0 {
		in = []*x509.Certificate{issuer}
	}
	for i, c := range in {
		if c == nil {
			return nil, fmt.Errorf("chain[%d] is nil", i)
		}
	}
	if !bytes.Equal(in[0].Raw, issuer.Raw) {
		return nil, fmt.Errorf("chain[0] (%q) is not the issuer certificate", in[0].Subject.String())
	}
	for i := 0; i+1 < len(in); i++ {
		if err := in[i].CheckSignatureFrom(in[i+1]); err != nil {
			return nil, fmt.Errorf("chain[%d] (%q) is not signed by chain[%d] (%q): %w",
				i, in[i].Subject.String(), i+1, in[i+1].Subject.String(), err)
		}
	}
	out := make([]*x509.Certificate, 0, len(in))
	for _, c := range in {
		if isSelfSigned(c) {
			break
		}
		out = append(out, c)
	}
	return out, nil
}

func isSelfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil
}

// checkHTTPURL accepts absolute http(s) URLs: relying parties fetch CRLs
// and OCSP over plain HTTP (RFC 5280 §4.2.1.13, RFC 6960 App. A), and a
// relative or scheme-less value would be unusable in a certificate.
func checkHTTPURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("parse %q: %w", s, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an absolute http(s) URL", s)
	}
	return nil
}
