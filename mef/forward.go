package mef

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/credfactory/credfactory/apierr"
	"github.com/credfactory/credfactory/ca"
	"github.com/credfactory/credfactory/httpapi"
	"github.com/credfactory/credfactory/kdf"
	"github.com/credfactory/credfactory/store"
	"github.com/valyala/fasthttp"
)

// ForwardItem is one credential a trusted OBF provisioned and forwards.
type ForwardItem struct {
	Token      string `json:"token"`
	AssignedID string `json:"assignedId"`
	// RequestID makes a resend recognisable; empty means the token and the
	// credential do.
	RequestID string `json:"requestId,omitempty"`
	// Certificate (PEM or base64 DER) issued by the OBF's sub-CA, or Key.
	Certificate string `json:"certificate,omitempty"`
	Key         *struct {
		SUID      int       `json:"suid"`
		KeyID     string    `json:"keyId"`
		KeID      string    `json:"keId,omitempty"`
		TargetIDs []string  `json:"targetIds"`
		Value     string    `json:"value"` // base64
		NotAfter  time.Time `json:"notAfter"`
	} `json:"key,omitempty"`
}

// ForwardResult is one item's outcome.
type ForwardResult struct {
	Index        int    `json:"index"`
	Status       string `json:"status"` // recorded, replayed or refused
	CredentialID string `json:"credentialId,omitempty"`
	Code         string `json:"code,omitempty"`
	Message      string `json:"message,omitempty"`
}

var errNotTrustedOBF = fail(http.StatusForbidden, "not_a_trusted_obf", "forwarding takes the client certificate of a trusted, registered OBF")

// Forward checks and records a trusted OBF's batch. Every item is checked on
// its own (token issued to this OBF and unexpired, assigned ID, chain to the
// OBF's sub-CA and inside its validity) and all are redeemed together, in the
// registry's group commit; a bad item never rejects the good ones, and a
// resent batch answers "replayed" for what is already recorded.
func (m *MEF) Forward(ctx context.Context, obf store.OBF, items []ForwardItem) []ForwardResult {
	results := make([]ForwardResult, len(items))
	var subCA *x509.Certificate
	if len(obf.SubCADER) > 0 {
		subCA, _ = x509.ParseCertificate(obf.SubCADER)
	}
	if err := m.subCAChain(subCA); err != nil {
		for i := range results {
			results[i] = ForwardResult{Index: i, Status: "refused", Code: "chain_invalid", Message: err.(*Failure).Message}
		}
		return results
	}
	var wg sync.WaitGroup
	for i, it := range items {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			res, path, err := m.forwardOne(ctx, obf, subCA, it)
			res.Index = i
			if err != nil {
				e := apierr.As(tokenErr(err))
				res = ForwardResult{Index: i, Status: "refused", Code: e.Code, Message: e.Message}
			}
			m.observe(path, res.Status == "replayed", err, start)
			results[i] = res
		}()
	}
	wg.Wait()
	m.obs.ObserveForwardBatch(len(items))
	return results
}

func (m *MEF) forwardOne(ctx context.Context, obf store.OBF, subCA *x509.Certificate, it ForwardItem) (ForwardResult, string, error) {
	if it.Token == "" || it.AssignedID == "" || (it.Certificate == "") == (it.Key == nil) {
		return ForwardResult{}, "forward", fail(http.StatusBadRequest, "bad_item", "an item needs token, assignedId and exactly one of certificate and key")
	}
	red := store.Redemption{TokenHash: tokenHash(it.Token), RequestID: it.RequestID, AssignedID: it.AssignedID,
		Mode: store.ModeTrusted, OBFID: obf.ID, Now: m.now()}
	e, err := m.st.Enrolment(ctx, red.TokenHash)
	if err != nil {
		return ForwardResult{}, "forward", err
	}
	var path string
	if it.Certificate != "" {
		path = "forward_cert"
		der, err := decodeDER(it.Certificate, "CERTIFICATE")
		if err != nil {
			return ForwardResult{}, path, err
		}
		cert, err := m.checkForwardedCert(subCA, der, e.AssignedID)
		if err != nil {
			return ForwardResult{}, path, err
		}
		serial := cert.SerialNumber.Text(16)
		fp := fingerprint(der)
		red.Credential = store.Credential{ID: kdf.CredentialID(CertCredentialType(e.AssignedID), hexs(fp)), Type: store.TypeX509,
			SUID: int(kdf.SUIDCertSAEF), Serial: &serial, CertSHA256: fp, CertDER: der,
			PublicKeySHA256: fingerprint(cert.RawSubjectPublicKeyInfo), NotBefore: cert.NotBefore, NotAfter: cert.NotAfter,
			Source: store.SourceForward, OBFID: &obf.ID}
		if red.RequestID == "" {
			red.RequestID = "fwd:" + hexs(fingerprint(append(slices.Clip(red.TokenHash), fp...)))
		}
	} else {
		path = "forward_key"
		k := it.Key
		value, err := base64.StdEncoding.DecodeString(k.Value)
		kind := kdf.CredentialType(0)
		switch s := kdf.SUID(k.SUID); {
		case err != nil || len(value) < 16 || len(value) > 64:
			return ForwardResult{}, path, fail(http.StatusBadRequest, "bad_key", "key.value must be 16 to 64 bytes, base64")
		case s >= kdf.SUIDRSPFMAF && s <= kdf.SUIDRSPFESDataSignature:
			kind = kdf.CredentialType(k.SUID - 10)
		default:
			return ForwardResult{}, path, fail(http.StatusBadRequest, "bad_key", "key.suid must be an RSPF-provisioned usage (21-25)")
		}
		if k.KeyID == "" || len(k.KeyID) > 255 || len(k.TargetIDs) == 0 || !k.NotAfter.After(red.Now) {
			return ForwardResult{}, path, fail(http.StatusBadRequest, "bad_key", "key needs keyId, targetIds and a future notAfter")
		}
		credID := kdf.CredentialID(kind, k.KeyID)
		if red.RequestID == "" {
			red.RequestID = "fwd:" + hexs(fingerprint(append(append(slices.Clip(red.TokenHash), credID...), value...)))
		}
		if replay, err := e.Check(red); err != nil {
			return ForwardResult{}, path, err
		} else if replay {
			if deref(e.CredentialID) != credID {
				return ForwardResult{}, path, errTokenRedeemed
			}
			return ForwardResult{Status: "replayed", CredentialID: credID}, path, nil
		}
		// Sealed by the HSM's KEK, bound to the Credential-ID, before it
		// touches the database (docs/architecture.md "HSM and keys").
		sealed, err := m.reg.SealKey(ctx, credID, value)
		if err != nil {
			return ForwardResult{}, path, err
		}
		keyID := k.KeyID
		var keID *string
		if k.KeID != "" {
			keID = &k.KeID
		}
		red.Credential = store.Credential{ID: credID, Type: store.TypePSK, SUID: k.SUID, KeyID: &keyID, KeID: keID,
			SealedKey: sealed, TargetIDs: k.TargetIDs, NotBefore: red.Now, NotAfter: k.NotAfter, Source: store.SourceForward, OBFID: &obf.ID}
	}
	got, err := m.reg.Redeem(background(ctx), red)
	if err != nil {
		return ForwardResult{}, path, err
	}
	status := "recorded"
	if got.Replayed {
		// A replay answers only for the very credential recorded: another
		// certificate for the same key is not it, and an OBS that handed it
		// out would give the device one the MAF does not hold.
		if got.Credential.ID != red.Credential.ID {
			return ForwardResult{}, path, errTokenRedeemed
		}
		status = "replayed"
	}
	return ForwardResult{Status: status, CredentialID: got.Credential.ID}, path, nil
}

// checkForwardedCert: the certificate must chain through this OBF's own
// sub-CA (not another OBF's, not the SP's issuing CA) to the root, sit
// inside the sub-CA's validity, and name the token's assigned ID.
func (m *MEF) checkForwardedCert(subCA *x509.Certificate, der []byte, assignedID string) (*x509.Certificate, error) {
	if subCA == nil {
		return nil, fail(http.StatusForbidden, "no_sub_ca", "this OBF has no sub-CA to issue certificates with: forward keys, or register it as an OBS")
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fail(http.StatusBadRequest, "bad_certificate", "the certificate does not parse")
	}
	if err := cert.CheckSignatureFrom(subCA); err != nil {
		return nil, fail(http.StatusForbidden, "not_from_obf_sub_ca", "the certificate was not issued by this OBF's sub-CA")
	}
	// The sub-CA's own chain (sub-CA, OBF CA, root) was verified once for
	// the batch (subCAChain); what is left per item is the leaf: its
	// signature (above), its dates, its usage and what the sub-CA's name
	// constraints allow. Verifying the whole chain per item cost three
	// more signature checks each.
	now := m.now()
	switch {
	case now.Before(cert.NotBefore) || now.After(cert.NotAfter):
		return nil, fail(http.StatusForbidden, "chain_invalid", "the certificate is not valid now")
	case !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageClientAuth):
		return nil, fail(http.StatusForbidden, "chain_invalid", "the certificate does not allow client authentication")
	case cert.KeyUsage&x509.KeyUsageDigitalSignature == 0:
		return nil, fail(http.StatusForbidden, "chain_invalid", "the certificate's key usage lacks digitalSignature")
	}
	for _, u := range cert.URIs {
		if !uriAllowed(subCA, u.Host) {
			return nil, fail(http.StatusForbidden, "chain_invalid", "the certificate's URI is outside its sub-CA's name constraints")
		}
	}
	if cert.NotBefore.Before(subCA.NotBefore) || cert.NotAfter.After(subCA.NotAfter) {
		return nil, fail(http.StatusForbidden, "validity_outside_sub_ca", "the certificate's validity is not inside its sub-CA's")
	}
	// The certificate must name the device exactly as the SP would have
	// (TS-0003 §10.1): peers identify a device by its URI SAN, so a CN for
	// one device and a URI for another would impersonate the second.
	want := AssignedIDURI(m.cfg.SPDomain, assignedID).String()
	switch {
	case len(cert.URIs) != 1 || cert.URIs[0].String() != want:
		return nil, fail(http.StatusForbidden, "assigned_id_mismatch", "the certificate must carry exactly one URI SAN, the token's assigned ID ("+want+")")
	case cert.Subject.CommonName != "" && cert.Subject.CommonName != assignedID:
		return nil, fail(http.StatusForbidden, "assigned_id_mismatch", "the certificate's CN is not the token's assigned ID")
	case len(cert.DNSNames)+len(cert.IPAddresses)+len(cert.EmailAddresses) > 0:
		return nil, fail(http.StatusForbidden, "bad_certificate", "a device certificate carries no DNS, IP or e-mail names")
	case cert.IsCA:
		return nil, fail(http.StatusForbidden, "bad_certificate", "a device certificate is not a CA")
	}
	if err := ca.CheckSubjectKey(cert.PublicKey); err != nil {
		return nil, fail(http.StatusForbidden, "unsupported_key", err.Error())
	}
	return cert, nil
}

func (m *MEF) forward(ctx *fasthttp.RequestCtx) error {
	peer, err := m.peers.Verify(ctx.TLSConnectionState())
	if err != nil {
		return &Failure{Status: http.StatusUnauthorized, Code: "client_certificate_required", Message: "forwarding needs a trusted OBF's TLS client certificate", Err: err}
	}
	obf, err := m.st.OBFBy(ctx, "client_cert_sha256", peer.SHA256[:])
	if errors.Is(err, store.ErrNotFound) || err == nil && (!obf.Trusted || obf.DisabledAt != nil) {
		return errNotTrustedOBF
	}
	if err != nil {
		return tokenErr(err)
	}
	var batch struct {
		Items []ForwardItem `json:"items"`
	}
	if err := httpapi.Decode(ctx.PostBody(), &batch); err != nil {
		return err
	}
	if len(batch.Items) == 0 || len(batch.Items) > m.cfg.MaxForward {
		return fail(http.StatusRequestEntityTooLarge, "batch_size", "a batch has 1 to "+strconv.Itoa(m.cfg.MaxForward)+" items")
	}
	// The OBF's enrolment limit: a batch costs its items (limits.go).
	if err := m.cfg.Limits.EnrolOBF.CheckN(obf.ID, len(batch.Items)); err != nil {
		return err
	}
	results := m.Forward(ctx, obf, batch.Items)
	return httpapi.JSON(ctx, http.StatusOK, struct {
		Results []ForwardResult `json:"results"`
	}{results})
}

// uriAllowed applies a sub-CA's URI name constraints to a host (RFC 5280
// §4.2.1.10: a constraint with a leading dot covers subdomains, without it
// the host itself).
func uriAllowed(ca *x509.Certificate, host string) bool {
	match := func(c string) bool {
		if strings.HasPrefix(c, ".") {
			return strings.HasSuffix(strings.ToLower(host), strings.ToLower(c))
		}
		return strings.EqualFold(host, c)
	}
	for _, c := range ca.ExcludedURIDomains {
		if match(c) {
			return false
		}
	}
	return len(ca.PermittedURIDomains) == 0 || slices.ContainsFunc(ca.PermittedURIDomains, match)
}

// subCAChain verifies an OBF's sub-CA up to the root through the OBF CA:
// once per batch, the same for every item in it.
func (m *MEF) subCAChain(subCA *x509.Certificate) error {
	if subCA == nil {
		return nil
	}
	_, err := subCA.Verify(x509.VerifyOptions{Roots: m.roots, Intermediates: m.obfCAs, CurrentTime: m.now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil || !subCA.IsCA {
		return &Failure{Status: http.StatusForbidden, Code: "chain_invalid", Message: "this OBF's sub-CA does not chain to the SP root through the OBF CA"}
	}
	return nil
}
