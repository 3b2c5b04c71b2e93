package mef

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/credfactory/credfactory/ca"
	"github.com/credfactory/credfactory/clientauth"
	"github.com/credfactory/credfactory/crlreason"
	"github.com/credfactory/credfactory/kdf"
	"github.com/credfactory/credfactory/store"
	"github.com/valyala/fasthttp"
)

var (
	errReenrollAuth = fail(http.StatusUnauthorized, "client_certificate_required",
		"simplereenroll is authenticated by the certificate being renewed: present it as the TLS client certificate")
	errUnknownCert    = fail(http.StatusForbidden, "unknown_certificate", "the TLS client certificate is not one this SP issued")
	errCertSuperseded = fail(http.StatusForbidden, "certificate_superseded", "the certificate was already renewed: renew with its successor, the current certificate")
	errCertRevoked    = fail(http.StatusForbidden, "certificate_revoked", "the certificate is revoked: enrol afresh with a new token")
	errCertExpired    = fail(http.StatusForbidden, "certificate_expired", "the certificate has expired: enrol afresh with a new token")
	errNotRenewable   = fail(http.StatusForbidden, "not_renewable", "only certificates renew through simplereenroll")
	errPeerUntrusted  = fail(http.StatusForbidden, "not_renewable",
		"the TLS client certificate does not verify against this SP's issuing CA (not yet valid, or issued elsewhere: a certificate a trusted OBS forwarded renews through that OBS)")
	errSubjectMismatch = fail(http.StatusBadRequest, "csr_subject_mismatch",
		"the CSR's subject must be empty or the assigned ID's, as in the certificate being renewed (RFC 7030 §4.2.2)")
)

// renewErr maps the registry's verdicts on a renewal to answers.
func renewErr(err error) error {
	var early *store.TooEarlyError
	switch {
	case errors.Is(err, store.ErrNotFound):
		return errUnknownCert
	case errors.Is(err, store.ErrCertSuperseded):
		return errCertSuperseded
	case errors.Is(err, store.ErrCertRevoked):
		return errCertRevoked
	case errors.Is(err, store.ErrCertExpired):
		return errCertExpired
	case errors.Is(err, store.ErrNotRenewable):
		return errNotRenewable
	case errors.As(err, &early) && early.Young:
		return fail(http.StatusForbidden, "renewal_too_early",
			"a certificate renews only once it is mef.renew_after old: retry after "+early.Opens.UTC().Format(time.RFC3339))
	case errors.As(err, &early):
		return fail(http.StatusForbidden, "renewal_too_early",
			"renewal is allowed only within mef.renew_before of expiry: retry after "+early.Opens.UTC().Format(time.RFC3339))
	}
	return tokenErr(err)
}

// Reenrol renews a certificate (RFC 7030 §4.2.2; compare step-ca's
// /renew): the TLS client certificate must be the current certificate of
// its assigned ID in the registry (active, unexpired, never renewed); the
// CSR asks for the same assigned ID (empty subject or the same CN, no other
// SAN than the assigned ID's URI); the new certificate is recorded and the
// old one superseded in one transaction (store.Renewal says why it is
// superseded rather than left valid). A retry with the same old certificate
// and the same public key gets the certificate already issued, with no new
// signature.
func (m *MEF) Reenrol(ctx context.Context, peer *x509.Certificate, csrDER []byte) (CertResult, error) {
	return m.reenrolFor(ctx, peer, csrDER, 0, false)
}

// reenrolFor is Reenrol under an EST label: a renewal keeps the usage of
// the certificate it renews, so a label naming another is refused.
func (m *MEF) reenrolFor(ctx context.Context, peer *x509.Certificate, csrDER []byte, suid kdf.SUID, nodeLabel bool) (CertResult, error) {
	if peer == nil {
		return CertResult{}, errReenrollAuth
	}
	parsed, err := ca.ParseCSRFor(csrDER, m.cfg.KeyPolicy)
	if err != nil {
		return CertResult{}, caFailure(err)
	}
	csr := parsed.Request()
	pkHash := fingerprint(csr.RawSubjectPublicKeyInfo)
	old, err := m.reg.Get(ctx, store.ByCertSHA256, fingerprint(peer.Raw))
	if err != nil {
		return CertResult{}, renewErr(err)
	}
	if suid != 0 && int(suid) != old.SUID {
		return CertResult{}, fail(http.StatusBadRequest, "suid_mismatch",
			fmt.Sprintf("a renewal keeps the usage of the certificate it renews (SUID %d): use its EST label or none", old.SUID))
	}
	// The cheap early verdict, before the HSM signs; Renew checks again
	// inside its transaction. Only a superseded certificate has a
	// successor to look up (a retry whose answer was lost).
	var successor *store.Credential
	if old.Status == store.StatusRevoked && old.RevocationReason != nil && *old.RevocationReason == crlreason.Superseded {
		if _, successor, err = m.st.RenewalState(ctx, old.ID); err != nil {
			return CertResult{}, renewErr(err)
		}
	}
	now := m.now()
	replay, err := store.CheckRenewal(old, successor, pkHash, now, m.cfg.RenewBefore, m.cfg.RenewAfter)
	if err != nil {
		return CertResult{}, renewErr(err)
	}
	if replay {
		return m.certResult(*successor)
	}
	// A certificate in the legacy URI form (or a CSE-ID's from before
	// ProfileCSE) renews into today's profile: same identity, names
	// that RFC 5280 parsers accept.
	// A Node-ID certificate renews into one for the same Node-ID
	// (store.SetNodeID keeps it while the certificate is active).
	isNode := isNodeIDCredential(old.ID)
	shape, err := m.shapeFor(ctx, isNode, old.AssignedID, old.DeviceID)
	if isNode && err == nil && (len(peer.URIs) != 1 || peer.URIs[0].String() != shape.uri.String()) {
		err = errNodeIDChanged
	} else if !isNode && nodeLabel {
		err = fail(http.StatusBadRequest, "not_a_node_id_certificate",
			"the EST label node-id renews Node-ID certificates: renew this one without it")
	}
	if err != nil {
		return CertResult{}, err
	}
	if err := checkCSRNames(parsed, shape); err != nil {
		return CertResult{}, err
	}
	if n := csr.Subject.Names; len(n) > 0 && (len(n) != 1 || csr.Subject.CommonName != shape.id) {
		return CertResult{}, errSubjectMismatch
	}
	// The tenant's enrolment limit, before the HSM signs, as for a first
	// enrolment (precheck): a renewal costs a signature and, through the
	// superseded certificate, a CRL entry. A replay is not charged (no
	// signature; a device whose answer was lost must get it back).
	if err := m.cfg.Limits.EnrolTenant.Check(old.Tenant); err != nil {
		return CertResult{}, err
	}
	issued, err := shape.issuer.Issue(ctx, shape.request(parsed, m.cfg.CertValidity))
	if err != nil {
		return CertResult{}, caFailure(err)
	}
	serial := issued.Certificate.SerialNumber.Text(16)
	fp := fingerprint(issued.DER)
	c := store.Credential{ID: kdf.CredentialID(shape.credType, hexs(fp)), Type: store.TypeX509,
		Serial: &serial, CertSHA256: fp, CertDER: issued.DER, PublicKeySHA256: pkHash, NotBefore: issued.Certificate.NotBefore,
		NotAfter: issued.Certificate.NotAfter, Source: store.SourceRSPF}
	got, err := m.st.Renew(background(ctx), store.Renewal{OldID: old.ID, Credential: c, Now: now,
		RenewBefore: m.cfg.RenewBefore, RenewAfter: m.cfg.RenewAfter, Actor: "enrollee:" + old.AssignedID})
	if err != nil {
		return CertResult{}, renewErr(err)
	}
	if got.Replayed { // a concurrent retry won: its certificate stands, this one is dropped unseen
		return m.certResult(got.Credential)
	}
	if m.cfg.OnRevoke != nil {
		m.cfg.OnRevoke() // the superseded certificate belongs on the next CRL
	}
	return CertResult{Certificate: issued.Certificate, Chain: issued.Chain, Credential: got.Credential}, nil
}

// renewalPeer is the verified TLS client certificate of a simplereenroll.
// Only a request without one gets 401: a certificate that was presented
// but failed verification would not pass on a retry either, so the answer
// says why (expired: enrol afresh; another issuer, such as an OBS's sub-CA:
// not ours to renew) rather than asking for a certificate.
func (m *MEF) renewalPeer(state *tls.ConnectionState) (*x509.Certificate, error) {
	p, err := m.peers.Verify(state)
	switch {
	case err == nil:
		return p.Certificate, nil
	case errors.Is(err, clientauth.ErrNoCertificate):
		return nil, errReenrollAuth
	}
	f := *errPeerUntrusted
	if !m.now().Before(state.PeerCertificates[0].NotAfter) {
		f = *errCertExpired
	}
	f.Err = err // for the log: why the chain failed
	return nil, &f
}

// certResult answers with a recorded certificate.
func (m *MEF) certResult(c store.Credential) (CertResult, error) {
	cert, err := x509.ParseCertificate(c.CertDER)
	if err != nil {
		return CertResult{}, err
	}
	return CertResult{Certificate: cert, Chain: m.chainFor(c.ID), Credential: c, Replayed: true}, nil
}

func (m *MEF) estReenroll(ctx *fasthttp.RequestCtx) error {
	start := time.Now()
	csr, err := estBody(ctx)
	var res CertResult
	if err == nil {
		var peer *x509.Certificate
		if peer, err = m.renewalPeer(ctx.TLSConnectionState()); err == nil {
			res, err = m.reenrolFor(ctx, peer, csr, estSUID(ctx), estNodeID(ctx))
		}
	}
	m.observe("est_reenroll", res.Replayed, err, start)
	if err != nil {
		return estError(ctx, err)
	}
	return m.writeIssued(ctx, res)
}
