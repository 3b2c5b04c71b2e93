package mef

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"net/http"

	"github.com/credfactory/credfactory/ca"
	"github.com/credfactory/credfactory/kdf"
	"github.com/credfactory/credfactory/store"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

var (
	oidChallengePassword = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 7}
	oidSAN               = asn1.ObjectIdentifier{2, 5, 29, 17}
)

// CertRequest is a certificate enrolment, from EST or JSON.
type CertRequest struct {
	// Token is the enrolment token (EST: the CSR's challengePassword).
	Token string
	// AssignedID, when the client names it (JSON), must be the token's.
	AssignedID string
	CSR        []byte // DER PKCS#10
	// Peer is the Enrollee's TLS client certificate, if it sent one.
	Peer *x509.Certificate
	// RequestID identifies the request for idempotent retries; empty means
	// the CSR's public key does.
	RequestID string
	// SUID is the usage the certificate is for (40-43); 0 means SAEF (42).
	SUID kdf.SUID
	// NodeID asks for a Node-ID certificate (nodeid.go) instead of the
	// assigned ID's.
	NodeID bool
}

// CertResult is an issued (or, on a retry, recorded) certificate.
type CertResult struct {
	Certificate *x509.Certificate
	Chain       []*x509.Certificate
	Credential  store.Credential
	Replayed    bool
}

var (
	errBadCSR        = fail(http.StatusBadRequest, "bad_csr", "the body is not a valid PKCS#10 certificate request")
	errNoChallenge   = fail(http.StatusBadRequest, "missing_token", "the CSR carries no challengePassword: put the enrolment token there (TS-0003 §8.3.6)")
	errSANMismatch   = fail(http.StatusBadRequest, "csr_san_mismatch", "the CSR asks for a subjectAltName that is not the assigned ID's")
	errCSRExtensions = fail(http.StatusBadRequest, "csr_extension_refused", "the CSR asks for an extension a device certificate may not have")
)

// EnrolCert redeems a token for a certificate: checks the token before any
// HSM work, issues from the CSR under the device profile (the assigned ID in
// subject and URI SAN), and records it with the redemption in one
// transaction. Nothing is answered that the MAF does not hold.
func (m *MEF) EnrolCert(ctx context.Context, req CertRequest) (CertResult, error) {
	// The CA's own parse, key policy and signature check, done once: the
	// token is inside the request, and Issue takes the parsed CSR as is.
	suid := req.SUID
	if suid == 0 {
		suid = kdf.SUIDCertSAEF
	} else if _, err := certSUID(fmt.Sprint(int(suid))); err != nil {
		return CertResult{}, err
	}
	if req.NodeID && m.cfg.NodeCA == nil {
		return CertResult{}, errNoNodeCA
	}
	parsed, err := ca.ParseCSRFor(req.CSR, m.cfg.KeyPolicy)
	if err != nil {
		return CertResult{}, caFailure(err)
	}
	csr := parsed.Request()
	if req.Token == "" {
		if req.Token, err = challengePassword(csr.RawTBSCertificateRequest); err != nil {
			return CertResult{}, err
		}
	}
	pkHash := fingerprint(csr.RawSubjectPublicKeyInfo)
	red := store.Redemption{TokenHash: tokenHash(req.Token), RequestID: req.RequestID, AssignedID: req.AssignedID,
		Mode: store.ModeUntrusted, Now: m.now(), Credential: store.Credential{PublicKeySHA256: pkHash}}
	if red.RequestID == "" {
		red.RequestID = "spki:" + hexs(pkHash)
	}
	if req.Peer != nil {
		red.DeviceCertSHA256 = fingerprint(req.Peer.Raw)
	}
	e, replay, err := m.precheck(ctx, red)
	if err != nil {
		return CertResult{}, err
	}
	if replay {
		return m.recorded(ctx, *e.CredentialID)
	}
	shape, err := m.shapeFor(ctx, req.NodeID, e.AssignedID, e.DeviceID)
	if err != nil {
		return CertResult{}, err
	}
	if err := checkCSRNames(parsed, shape); err != nil {
		return CertResult{}, err
	}
	issued, err := shape.issuer.Issue(ctx, shape.request(parsed, m.cfg.CertValidity))
	if err != nil {
		return CertResult{}, caFailure(err)
	}
	serial := issued.Certificate.SerialNumber.Text(16)
	fp := fingerprint(issued.DER)
	red.Credential = store.Credential{
		ID: kdf.CredentialID(shape.credType, hexs(fp)), Type: store.TypeX509, SUID: int(suid),
		Serial: &serial, CertSHA256: fp, CertDER: issued.DER, PublicKeySHA256: pkHash,
		NotBefore: issued.Certificate.NotBefore, NotAfter: issued.Certificate.NotAfter, Source: store.SourceRSPF,
	}
	got, err := m.reg.Redeem(background(ctx), red)
	if err != nil {
		return CertResult{}, tokenErr(err)
	}
	if got.Replayed { // a concurrent retry of this request won: its certificate stands
		return m.recorded(ctx, got.Credential.ID)
	}
	return CertResult{Certificate: issued.Certificate, Chain: issued.Chain, Credential: got.Credential}, nil
}

// recorded answers a retry with the certificate the MAF holds.
func (m *MEF) recorded(ctx context.Context, credentialID string) (CertResult, error) {
	c, err := m.reg.Get(ctx, store.ByID, credentialID)
	if err != nil {
		return CertResult{}, tokenErr(err)
	}
	if c.Type != store.TypeX509 || c.Status != store.StatusActive {
		return CertResult{}, errTokenRedeemed
	}
	return m.certResult(c)
}

// checkCSRNames refuses a CSR that asks for anything the assigned ID's
// profile would not give it, naming what: a name other than the assigned
// ID's (csr_san_mismatch: its full URI, in the current or the legacy
// scheme-less form, and for a CSE-ID its public domain name), a common name
// other than the assigned ID (csr_subject_mismatch), or an extension, key
// usage, extended key usage or CA status (csr_extension_refused, through
// ca.CSR.CheckFor). Silently dropping them would hand the device a
// certificate other than the one it asked for. TS-0003 §10.1.4 has the CSR
// carry the identity in subjectAltName; a CSR without one gets it anyway.
func checkCSRNames(parsed *ca.CSR, want certShape) error {
	csr := parsed.Request()
	assignedID := want.id
	badURI := len(csr.URIs) > 1 || len(csr.URIs) == 1 && csr.URIs[0].String() != want.uri.String() &&
		(want.legacy == nil || csr.URIs[0].String() != want.legacy.String())
	badDNS := len(csr.DNSNames) > len(want.dns) || len(csr.DNSNames) == 1 && csr.DNSNames[0] != want.dns[0]
	if badURI || badDNS || len(csr.EmailAddresses)+len(csr.IPAddresses) > 0 {
		e := *errSANMismatch
		e.Message += " (" + want.uri.String()
		for _, d := range want.dns {
			e.Message += ", DNS " + d
		}
		e.Message += ")"
		return &e
	}
	if cn := csr.Subject.CommonName; cn != "" && cn != assignedID {
		return fail(http.StatusBadRequest, "csr_subject_mismatch",
			fmt.Sprintf("the CSR's subject common name %q is not the assigned ID %s: leave it empty or use the assigned ID", cn, assignedID))
	}
	if err := parsed.CheckFor(want.profile, assignedID); err != nil {
		e := *errCSRExtensions
		e.Message, e.Err = err.Error(), err
		return &e
	}
	return nil
}

// challengePassword reads the challengePassword attribute (PKCS#9, RFC 2985
// §5.4.1: a DirectoryString) from a CSR's CertificationRequestInfo. Go's
// x509 does not expose CSR attributes other than extension requests.
func challengePassword(tbs []byte) (string, error) {
	in := cryptobyte.String(tbs)
	var info, attrs cryptobyte.String
	if !in.ReadASN1(&info, cbasn1.SEQUENCE) ||
		!info.SkipASN1(cbasn1.INTEGER) || !info.SkipASN1(cbasn1.SEQUENCE) || !info.SkipASN1(cbasn1.SEQUENCE) {
		return "", errBadCSR
	}
	if !info.ReadOptionalASN1(&attrs, nil, cbasn1.Tag(0).ContextSpecific().Constructed()) {
		return "", errBadCSR
	}
	for !attrs.Empty() {
		var attr, values cryptobyte.String
		var oid asn1.ObjectIdentifier
		if !attrs.ReadASN1(&attr, cbasn1.SEQUENCE) || !attr.ReadASN1ObjectIdentifier(&oid) || !attr.ReadASN1(&values, cbasn1.SET) {
			return "", errBadCSR
		}
		if !oid.Equal(oidChallengePassword) {
			continue
		}
		var tag cbasn1.Tag
		var value cryptobyte.String
		if !values.ReadAnyASN1(&value, &tag) {
			return "", errBadCSR
		}
		switch tag {
		case cbasn1.PrintableString, cbasn1.UTF8String, cbasn1.IA5String, cbasn1.T61String:
			if len(value) == 0 || bytes.IndexByte(value, 0) >= 0 {
				return "", errNoChallenge
			}
			return string(value), nil
		}
		return "", errBadCSR
	}
	return "", errNoChallenge
}

// caFailure turns the CA's typed refusals into 400s that say why.
func caFailure(err error) error {
	if code := ca.Code(err); code != "" {
		return &Failure{Status: http.StatusBadRequest, Code: code, Message: err.Error(), Err: err}
	}
	return tokenErr(err)
}
