package mef

import (
	"context"
	"crypto/x509"
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/credfactory/credfactory/ca"
	"github.com/credfactory/credfactory/kdf"
	"github.com/credfactory/credfactory/store"
	"github.com/valyala/fasthttp"
)

var errReenrollAuth = fail(http.StatusUnauthorized, "client_certificate_required",
	"simplereenroll is authenticated by the certificate being renewed: present it as the TLS client certificate")

// Reenrol renews a certificate (RFC 7030 §4.2.2): the TLS client certificate
// must be an active certificate this MAF holds; the new one is for the same
// assigned ID and is recorded before it is answered. The old one stays valid
// until it expires or is revoked, so a device can switch over safely.
func (m *MEF) Reenrol(ctx context.Context, peer *x509.Certificate, csrDER []byte) (CertResult, error) {
	if peer == nil {
		return CertResult{}, errReenrollAuth
	}
	old, err := m.reg.Get(ctx, store.ByCertSHA256, fingerprint(peer.Raw))
	if errors.Is(err, store.ErrNotFound) {
		return CertResult{}, fail(http.StatusForbidden, "unknown_certificate", "the TLS client certificate is not one this SP issued")
	}
	if err != nil {
		return CertResult{}, tokenErr(err)
	}
	if old.Status != store.StatusActive || !m.now().Before(old.NotAfter) {
		return CertResult{}, fail(http.StatusForbidden, "certificate_not_active", "the certificate being renewed is "+old.Status+" or expired: enrol afresh")
	}
	parsed, err := ca.ParseCSR(csrDER)
	if err != nil {
		return CertResult{}, caFailure(err)
	}
	uri := AssignedIDURI(m.cfg.SPDomain, old.AssignedID)
	if err := checkCSRNames(parsed.Request(), uri); err != nil {
		return CertResult{}, err
	}
	issued, err := m.ca.Issue(ctx, ca.Request{Parsed: parsed, Profile: ca.ProfileDevice, AssignedID: old.AssignedID,
		URIs: []*url.URL{uri}, Validity: m.cfg.CertValidity})
	if err != nil {
		return CertResult{}, caFailure(err)
	}
	serial := issued.Certificate.SerialNumber.Text(16)
	fp := fingerprint(issued.DER)
	c := store.Credential{ID: kdf.CredentialID(CertCredentialType(old.AssignedID), hexs(fp)), AssignedID: old.AssignedID,
		DeviceID: old.DeviceID, Tenant: old.Tenant, Type: store.TypeX509, SUID: old.SUID, Serial: &serial, CertSHA256: fp,
		CertDER: issued.DER, PublicKeySHA256: fingerprint(parsed.Request().RawSubjectPublicKeyInfo), NotBefore: issued.Certificate.NotBefore,
		NotAfter: issued.Certificate.NotAfter, Source: store.SourceRSPF, CreatedAt: m.now()}
	if err := m.reg.Register(background(ctx), c); err != nil {
		return CertResult{}, tokenErr(err)
	}
	return CertResult{Certificate: issued.Certificate, Chain: issued.Chain, Credential: c}, nil
}

func (m *MEF) estReenroll(ctx *fasthttp.RequestCtx) error {
	start := time.Now()
	csr, err := estBody(ctx)
	var res CertResult
	if err == nil {
		var peer *x509.Certificate
		if p, verr := m.peers.Verify(ctx.TLSConnectionState()); verr == nil {
			peer = p.Certificate
		}
		res, err = m.Reenrol(ctx, peer, csr)
	}
	m.observe("est_reenroll", false, err, start)
	if err != nil {
		return estError(ctx, err)
	}
	return writePKCS7(ctx, append([]*x509.Certificate{res.Certificate}, res.Chain...))
}
