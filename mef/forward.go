package mef

import (
	"context"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/credfactory/credfactory/apierr"
	"github.com/credfactory/credfactory/ca"
	"github.com/credfactory/credfactory/forwardapi"
	"github.com/credfactory/credfactory/httpapi"
	"github.com/credfactory/credfactory/kdf"
	"github.com/credfactory/credfactory/store"
	"github.com/valyala/fasthttp"
)

// ForwardItem and ForwardResult are the wire contract (package forwardapi).
type (
	ForwardItem   = forwardapi.Item
	ForwardResult = forwardapi.Result
)

var (
	errNotTrustedOBF = fail(http.StatusForbidden, forwardapi.CodeNotTrustedOBF, "forwarding takes the client certificate of a trusted, registered, enabled OBF")
	errSubCARetired  = fail(http.StatusForbidden, forwardapi.CodeSubCARetired,
		"certificates issued by an OBF's sub-CA are no longer accepted: forward the device's CSR and the SP's CA certifies it (README \"Trust model\")")
	errKeyIDAssigned = fail(http.StatusForbidden, forwardapi.CodeKeyIDAssignedBySP,
		"the SP assigns a forwarded key's KeID and key ID (TS-0003 §10.3.4): leave keyId and keId out and load the ones the answer carries")
)

// Forward checks and records a trusted OBF's batch. The OBF is a
// registration authority (README "Trust model"): it vouches that the token
// was handed to the device it provisions, and the SP binds everything
// else. For a CSR the SP's issuing CA certifies the key for the token's
// assigned ID, and for a shared key the MEF assigns its identifiers, so no
// OBF can name an identity the SP did not assign to its tenant. Every item
// is checked on its own (token issued to this OBF and unexpired, assigned
// ID) before any HSM work, and all are redeemed together in the registry's
// group commit; a bad item never rejects the good ones, and a resent batch
// answers "replayed" with what is already recorded.
func (m *MEF) Forward(ctx context.Context, obf store.OBF, items []ForwardItem) []ForwardResult {
	results := make([]ForwardResult, len(items))
	known := m.batchEnrolments(ctx, items)
	var wg sync.WaitGroup
	for i, it := range items {
		// An item starts only with one of the MEF's forward slots: 64
		// batches of a thousand items at once were 64,000 goroutines,
		// each with its parsed CSR, and the server spent half its CPU
		// collecting garbage at 750 MiB.
		m.forwardSlots <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-m.forwardSlots }()
			defer wg.Done()
			start := time.Now()
			res, path, err := m.forwardOne(ctx, obf, it, known)
			if err != nil {
				e := apierr.As(tokenErr(err))
				res = ForwardResult{Status: forwardapi.StatusRefused, Code: e.Code, Message: e.Message}
			}
			res.Index = i
			m.observe(path, res.Status == forwardapi.StatusReplayed, err, start)
			results[i] = res
		}()
	}
	wg.Wait()
	m.obs.ObserveForwardBatch(len(items))
	return results
}

// batchEnrolments reads the enrolments of a batch's tokens in a few
// statements; nil (after a read error) leaves each item to read its own.
func (m *MEF) batchEnrolments(ctx context.Context, items []ForwardItem) map[string]store.Enrolment {
	hashes := make([][]byte, 0, len(items))
	for _, it := range items {
		if it.Token != "" {
			hashes = append(hashes, tokenHash(it.Token))
		}
	}
	known, err := m.st.EnrolmentsOfTokens(ctx, hashes)
	if err != nil {
		return nil
	}
	return known
}

func (m *MEF) forwardOne(ctx context.Context, obf store.OBF, it ForwardItem, known map[string]store.Enrolment) (ForwardResult, string, error) {
	n := 0
	for _, set := range []bool{it.CSR != "", it.Key != nil, it.Certificate != ""} {
		if set {
			n++
		}
	}
	if it.Token == "" || it.AssignedID == "" || n != 1 {
		return ForwardResult{}, "forward", fail(http.StatusBadRequest, forwardapi.CodeBadItem, "an item needs token, assignedId and exactly one of csr and key")
	}
	if it.Certificate != "" {
		return ForwardResult{}, "forward_cert", errSubCARetired
	}
	red := store.Redemption{TokenHash: tokenHash(it.Token), RequestID: it.RequestID, AssignedID: it.AssignedID,
		Mode: store.ModeTrusted, OBFID: obf.ID, Now: m.now()}
	if it.CSR != "" {
		res, err := m.forwardCSR(ctx, obf, it, red, known)
		return res, "forward_cert", err
	}
	res, err := m.forwardKey(ctx, obf, it, red, known)
	return res, "forward_key", err
}

// forwardCSR: the SP's issuing CA certifies the device's key for the
// token's assigned ID (the device profile: one URI SAN, TS-0003 §10.1), as
// on the EST path, so the certificate names the CRL and OCSP responder the
// SP serves and a release revokes it for every relying party.
func (m *MEF) forwardCSR(ctx context.Context, obf store.OBF, it ForwardItem, red store.Redemption, known map[string]store.Enrolment) (ForwardResult, error) {
	der, err := decodeDER(it.CSR, "CERTIFICATE REQUEST")
	if err != nil {
		return ForwardResult{}, err
	}
	parsed, err := ca.ParseCSRFor(der, m.cfg.KeyPolicy)
	if err != nil {
		return ForwardResult{}, caFailure(err)
	}
	csr := parsed.Request()
	pkHash := fingerprint(csr.RawSubjectPublicKeyInfo)
	red.Credential.PublicKeySHA256 = pkHash
	if red.RequestID == "" {
		red.RequestID = "fwd:" + hexs(fingerprint(append(slices.Clip(red.TokenHash), pkHash...)))
	}
	e, replay, err := m.forwardedEnrolment(ctx, red, known)
	if err != nil {
		return ForwardResult{}, err
	} else if replay {
		return m.forwardedCert(ctx, *e.CredentialID, forwardapi.StatusReplayed)
	}
	shape, err := m.certShape(e.AssignedID)
	if err != nil {
		return ForwardResult{}, err
	}
	if err := checkCSRNames(parsed, shape); err != nil {
		return ForwardResult{}, err
	}
	// A batch's items run concurrently so that their redemptions share
	// commits; their issuance (lint and signature: CPU and HSM) takes one
	// of a few slots, so a thousand items do not build a thousand
	// certificates at once and starve each other and every other path.
	select {
	case m.issueSlots <- struct{}{}:
	case <-ctx.Done():
		return ForwardResult{}, ctx.Err()
	}
	issued, err := shape.issuer.Issue(ctx, shape.request(parsed, m.cfg.CertValidity))
	<-m.issueSlots
	if err != nil {
		return ForwardResult{}, caFailure(err)
	}
	serial := issued.Certificate.SerialNumber.Text(16)
	fp := fingerprint(issued.DER)
	red.Credential = store.Credential{ID: kdf.CredentialID(shape.credType, hexs(fp)), Type: store.TypeX509,
		SUID: int(kdf.SUIDCertSAEF), Serial: &serial, CertSHA256: fp, CertDER: issued.DER, PublicKeySHA256: pkHash,
		NotBefore: issued.Certificate.NotBefore, NotAfter: issued.Certificate.NotAfter, Source: store.SourceForward, OBFID: &obf.ID}
	got, err := m.reg.Redeem(background(ctx), red)
	if err != nil {
		return ForwardResult{}, err
	}
	if got.Replayed { // a concurrent resend of this item won: its certificate stands
		return m.forwardedCert(ctx, got.Credential.ID, forwardapi.StatusReplayed)
	}
	return ForwardResult{Status: forwardapi.StatusRecorded, CredentialID: got.Credential.ID,
		Certificate: string(ca.EncodeCertsPEM(append([]*x509.Certificate{issued.Certificate}, issued.Chain...)))}, nil
}

// forwardedCert answers with a recorded certificate and the issuing CA's
// chain.
func (m *MEF) forwardedCert(ctx context.Context, credentialID, status string) (ForwardResult, error) {
	c, err := m.recorded(ctx, credentialID)
	if err != nil {
		return ForwardResult{}, err
	}
	return ForwardResult{Status: status, CredentialID: c.Credential.ID,
		Certificate: string(ca.EncodeCertsPEM(append([]*x509.Certificate{c.Certificate}, c.Chain...)))}, nil
}

// forwardKey records a shared key the OBF generated (it is in the device
// already, or will be from the answer) under identifiers the MEF assigns,
// exactly as for a key the MEF derives itself (EnrolKey): a fresh random
// relative ID under the MEF's FQDN (the MAF's for Km), so IDs are unique
// across tenants and no OBF can register a key under another device's
// KeID or squat a key ID. The lifetime is bounded by mef.key_lifetime.
func (m *MEF) forwardKey(ctx context.Context, obf store.OBF, it ForwardItem, red store.Redemption, known map[string]store.Enrolment) (ForwardResult, error) {
	k := it.Key
	var kind kdf.CredentialType
	switch s := kdf.SUID(k.SUID); {
	case len(k.Value) < 16 || len(k.Value) > 64:
		return ForwardResult{}, fail(http.StatusBadRequest, forwardapi.CodeBadKey, "key.value must be 16 to 64 bytes, base64")
	case s >= kdf.SUIDRSPFMAF && s <= kdf.SUIDRSPFESDataSignature:
		kind = kdf.CredentialType(k.SUID - 10)
	default:
		return ForwardResult{}, fail(http.StatusBadRequest, forwardapi.CodeBadKey, "key.suid must be an RSPF-provisioned usage (21-25)")
	}
	if k.KeyID != "" || k.KeID != "" {
		return ForwardResult{}, errKeyIDAssigned
	}
	if len(k.TargetIDs) == 0 || len(k.TargetIDs) > 16 {
		return ForwardResult{}, fail(http.StatusBadRequest, forwardapi.CodeBadKey, "key.targetIds names 1 to 16 Targets")
	}
	for _, t := range k.TargetIDs {
		if t == "" || len(t) > 255 || containsSpace(t) {
			return ForwardResult{}, fail(http.StatusBadRequest, forwardapi.CodeBadKey, "target IDs are non-empty IDs without spaces, at most 255 bytes")
		}
	}
	limit := red.Now.Add(m.cfg.KeyLifetime)
	notAfter := k.NotAfter
	switch {
	case notAfter.IsZero():
		notAfter = limit
	case !notAfter.After(red.Now):
		return ForwardResult{}, fail(http.StatusBadRequest, forwardapi.CodeBadKey, "key.notAfter is not in the future")
	case notAfter.After(limit):
		return ForwardResult{}, fail(http.StatusBadRequest, forwardapi.CodeKeyLifetime,
			"key.notAfter is beyond the SP's limit for shared keys ("+m.cfg.KeyLifetime.String()+" from now, mef.key_lifetime)")
	}
	if red.RequestID == "" {
		red.RequestID = "fwd:" + hexs(fingerprint(append(append(slices.Clip(red.TokenHash), byte(k.SUID)), k.Value...)))
	}
	e, replay, err := m.forwardedEnrolment(ctx, red, known)
	if err != nil {
		return ForwardResult{}, err
	} else if replay {
		return m.forwardedKey(ctx, *e.CredentialID, k.Value)
	}
	rel, err := kdf.NewRelativeID()
	if err != nil {
		return ForwardResult{}, err
	}
	relHex := hex.EncodeToString(rel)
	keID := kdf.KeID(rel, m.cfg.FQDN)
	keyID := keID
	switch kdf.SUID(k.SUID) {
	case kdf.SUIDRSPFMAF:
		keyID, err = kdf.KmID(relHex, m.cfg.MAFFQDN)
	case kdf.SUIDRSPFSAEF:
		keyID, err = kdf.KpsaID(relHex, m.cfg.FQDN)
	}
	if err != nil {
		return ForwardResult{}, err
	}
	credID := kdf.CredentialID(kind, keyID)
	// Sealed by the HSM's KEK, bound to the Credential-ID, before it
	// touches the database (README "Trust model": keys at rest).
	sealed, err := m.reg.SealKey(ctx, credID, k.Value)
	if err != nil {
		return ForwardResult{}, err
	}
	red.Credential = store.Credential{ID: credID, Type: store.TypePSK, SUID: k.SUID, KeyID: &keyID, KeID: &keID,
		SealedKey: sealed, TargetIDs: k.TargetIDs, NotBefore: red.Now, NotAfter: notAfter, Source: store.SourceForward, OBFID: &obf.ID}
	got, err := m.reg.Redeem(background(ctx), red)
	if err != nil {
		return ForwardResult{}, err
	}
	if got.Replayed {
		return m.forwardedKey(ctx, got.Credential.ID, k.Value)
	}
	return ForwardResult{Status: forwardapi.StatusRecorded, CredentialID: credID, KeyID: keyID, KeID: keID,
		NotAfter: notAfter.UTC()}, nil
}

// forwardedKey answers a resend with the identifiers recorded the first
// time, and only if the key recorded is the one resent: a request ID is
// the OBF's to choose, and the device must never be handed IDs under which
// the MAF holds another key.
func (m *MEF) forwardedKey(ctx context.Context, credentialID string, value []byte) (ForwardResult, error) {
	c, err := m.reg.Get(ctx, store.ByID, credentialID)
	if err != nil {
		return ForwardResult{}, err
	}
	if c.Type != store.TypePSK || c.Status != store.StatusActive {
		return ForwardResult{}, errTokenRedeemed
	}
	key, err := m.reg.Key(ctx, c)
	if err != nil {
		return ForwardResult{}, err
	}
	if subtle.ConstantTimeCompare(key, value) != 1 {
		return ForwardResult{}, errTokenRedeemed
	}
	return ForwardResult{Status: forwardapi.StatusReplayed, CredentialID: c.ID, KeyID: deref(c.KeyID), KeID: deref(c.KeID),
		NotAfter: c.NotAfter.UTC()}, nil
}

func containsSpace(s string) bool {
	for _, r := range s {
		if r == ' ' || r == '\t' || r == '\r' || r == '\n' {
			return true
		}
	}
	return false
}

func (m *MEF) forward(ctx *fasthttp.RequestCtx) error {
	peer, err := m.obfPeers.Verify(ctx.TLSConnectionState())
	if err != nil {
		return &Failure{Status: http.StatusUnauthorized, Code: forwardapi.CodeClientCertRequired, Message: "forwarding needs a trusted OBF's TLS client certificate", Err: err}
	}
	obf, err := m.st.OBFBy(ctx, "client_cert_sha256", peer.SHA256[:])
	if errors.Is(err, store.ErrNotFound) || err == nil && (!obf.Trusted || obf.DisabledAt != nil) {
		return errNotTrustedOBF
	}
	if err != nil {
		return tokenErr(err)
	}
	var batch forwardapi.Request
	if err := httpapi.Decode(ctx.PostBody(), &batch); err != nil {
		return err
	}
	if len(batch.Items) == 0 || len(batch.Items) > m.cfg.MaxForward {
		return fail(http.StatusRequestEntityTooLarge, forwardapi.CodeBatchSize, "a batch has 1 to "+strconv.Itoa(m.cfg.MaxForward)+" items")
	}
	// The OBF's enrolment limit: a batch costs its items (limits.go).
	if err := m.cfg.Limits.EnrolOBF.CheckN(obf.ID, len(batch.Items)); err != nil {
		return err
	}
	return httpapi.JSON(ctx, http.StatusOK, forwardapi.Response{Results: m.Forward(ctx, obf, batch.Items)})
}

// forwardedEnrolment checks a forwarded item against its token's
// enrolment (from the batch's read, known, or read now), before any HSM
// work; replay reports an item already recorded (a resent batch), whose
// credential is answered again. A read that is stale by the time the item
// is redeemed costs nothing: Redeem checks the token again atomically.
func (m *MEF) forwardedEnrolment(ctx context.Context, red store.Redemption, known map[string]store.Enrolment) (store.Enrolment, bool, error) {
	var e store.Enrolment
	var err error
	if known != nil {
		var ok bool
		if e, ok = known[string(red.TokenHash)]; !ok {
			err = store.ErrTokenUnknown
		}
	} else {
		e, err = m.st.Enrolment(ctx, red.TokenHash)
	}
	if err != nil {
		return store.Enrolment{}, false, err
	}
	replay, err := e.Check(red)
	return e, replay, err
}
