package portal

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/credfactory/credfactory/apierr"
	"github.com/credfactory/credfactory/ratelimit"
	"github.com/credfactory/credfactory/store"
)

// Proof is how the stakeholder proves control of the device: exactly one of
// the claim code from its label, a signature by its existing certificate's
// key over a nonce the portal issued, or (Vouch) the trusted OBF calling
// with its own client certificate.
type Proof struct {
	ClaimCode string `json:"claimCode,omitempty"`
	Nonce     string `json:"nonce,omitempty"`
	Signature string `json:"signature,omitempty"`
	Vouch     bool   `json:"vouch,omitempty"`
}

// EnrolRequest asks for an enrolment bundle (api/openapi.yaml EnrolRequest).
type EnrolRequest struct {
	Proof Proof  `json:"proof"`
	OBFID string `json:"obfId,omitempty"`
	// AssignedIDType is "ae" (default: an SP-relative AE-ID, S prefix) or
	// "cse" (a CSE-ID, / prefix).
	AssignedIDType string `json:"assignedIdType,omitempty"`
}

// Bundle is what the OBF (or the stakeholder's own OBD) gets.
type Bundle struct {
	Token             string    `json:"token"`
	AssignedID        string    `json:"assignedId"`
	ExpiresAt         time.Time `json:"expiresAt"`
	MEFURI            string    `json:"mefUri,omitempty"`
	TrustAnchor       string    `json:"trustAnchor,omitempty"`
	TrustAnchorSHA256 string    `json:"trustAnchorSha256,omitempty"`
	// OBFName is for the page that shows the bundle, not part of it.
	OBFName string `json:"-"`
}

var (
	errWrongClaim  = apierr.New(http.StatusForbidden, "wrong_claim_code", "that is not this device's claim code")
	errClaimLocked = &apierr.Error{Status: http.StatusTooManyRequests, Code: "claim_locked", Message: "too many wrong claim codes: try again later", RetryAfter: 900}
	errBadProof    = apierr.New(http.StatusBadRequest, "bad_proof", "give exactly one proof: claimCode, nonce with signature, or vouch (as a trusted OBF)")
	errUnknownOBF  = apierr.New(http.StatusNotFound, "unknown_obf", "no such on-boarding function for this stakeholder")
)

// Nonce issues a fresh nonce for proof of control by the device's existing
// certificate, for the caller alone: it replaces the caller's own earlier
// one, never another claimant's, and is good once.
func (p *Portal) Nonce(ctx context.Context, who Principal, deviceID string) (string, time.Time, error) {
	// A nonce writes the registry, so it counts against the tenant's token limit like a token does.
	if err := p.cfg.Limits.TokenTenant.Check(who.Stakeholder.Tenant()); err != nil {
		return "", time.Time{}, err
	}
	d, tenant, err := p.enrollable(ctx, who, deviceID, "")
	if err != nil {
		return "", time.Time{}, err
	}
	if len(d.DeviceCertDER) == 0 {
		if tenant != d.Tenant {
			return "", time.Time{}, errDeviceNotFound // a claimant learns nothing about another tenant's device
		}
		return "", time.Time{}, apierr.New(http.StatusConflict, "no_device_certificate", "this device was pre-enrolled without a certificate: prove control with its claim code")
	}
	nonce := randomToken()
	now := p.now()
	expires := now.Add(p.cfg.NonceTTL)
	switch err := p.st.SetNonce(ctx, d.ID, who.Stakeholder.ID, sha(nonce), expires, now, p.cfg.MaxNoncesPerDevice); {
	case errors.Is(err, store.ErrTooManyNonces):
		return "", time.Time{}, &apierr.Error{Status: http.StatusTooManyRequests, Code: "too_many_nonces",
			Message: "this device has as many outstanding nonces as it may hold: try again when one expires", RetryAfter: int(p.cfg.NonceTTL.Seconds())}
	case err != nil:
		return "", time.Time{}, storeErr(err)
	}
	return nonce, expires, nil
}

// Enrol checks the proof of control and the chosen OBF, then issues a token
// bound to the device, its assigned ID, the OBF and (where known) the
// device's certificate. Re-requesting cancels the device's open token. An
// unowned device (see enrollable) is claimed by the token: it moves into the
// caller's tenant with a fresh assigned ID.
func (p *Portal) Enrol(ctx context.Context, who Principal, deviceID string, req EnrolRequest) (Bundle, error) {
	if err := requireRole(who, store.RoleSubscriber, store.RoleInstaller, store.RoleManufacturer); err != nil {
		return Bundle{}, err
	}
	// Token issuance is rate limited per tenant, before any registry work.
	if err := p.cfg.Limits.TokenTenant.Check(who.Stakeholder.Tenant()); err != nil {
		return Bundle{}, err
	}
	d, tenant, err := p.enrollable(ctx, who, deviceID, strings.TrimSpace(req.Proof.ClaimCode))
	if err != nil {
		return Bundle{}, err
	}
	if d.State == store.DeviceRevoked {
		return Bundle{}, apierr.New(http.StatusConflict, "device_revoked", "this device's credentials were revoked: it must be released before it enrols again")
	}
	claim, err := p.checkProof(ctx, who, d, tenant, req.Proof)
	if err != nil {
		return Bundle{}, err
	}

	mode, obfID, obfName := store.ModeUntrusted, (*string)(nil), ""
	if req.OBFID != "" {
		var o store.OBF
		if who.OBF != nil && who.OBF.ID == req.OBFID {
			o, err = *who.OBF, nil // a vouching OBF was just loaded by Authenticate
		} else {
			o, err = p.st.OBFBy(ctx, "id", req.OBFID)
		}
		if errors.Is(err, store.ErrNotFound) || err == nil && (o.StakeholderID != tenant || o.DisabledAt != nil) {
			return Bundle{}, errUnknownOBF
		}
		if err != nil {
			return Bundle{}, storeErr(err)
		}
		obfID, obfName = &o.ID, o.Name
		if o.Trusted {
			mode = store.ModeTrusted
		}
	}
	if req.Proof.Vouch && (obfID == nil || *obfID != who.OBF.ID) {
		return Bundle{}, apierr.New(http.StatusBadRequest, "bad_proof", "a vouching OBF enrols the device for itself: set obfId to its own ID")
	}

	assigned := ""
	if d.AssignedID != nil {
		assigned = *d.AssignedID // a re-request keeps the device's identity
	} else if assigned, err = newAssignedID(req.AssignedIDType); err != nil {
		return Bundle{}, err
	}
	token := randomToken()
	now := p.now()
	e := store.Enrolment{TokenHash: sha(token), DeviceID: d.ID, AssignedID: assigned, StakeholderID: who.Stakeholder.ID,
		Tenant: tenant, ExpectTenant: d.Tenant, OBFID: obfID, Mode: mode, ExpiresAt: now.Add(p.cfg.TokenTTL), CreatedAt: now}
	if mode == store.ModeUntrusted {
		// The Enrollee presents its existing certificate over TLS on the
		// RSPF path; on the trusted path the OBF forwards, and the OBF is
		// what the token is bound to.
		e.DeviceCertSHA256 = d.DeviceCertSHA256
	}
	detail := map[string]any{"assignedId": assigned, "mode": mode}
	if tenant != d.Tenant {
		detail["claimedFrom"] = d.Tenant
	}
	if obfID != nil {
		detail["obfId"] = *obfID
	}
	audit := store.AuditEvent{At: now, Tenant: tenant, Actor: who.actor(), Action: "device.token_issued", Subject: d.ID, Detail: detail}
	// Claim bookkeeping, token and audit event commit together.
	switch err := p.st.IssueToken(ctx, e, claim, &audit); {
	case errors.Is(err, store.ErrNotFound):
		return Bundle{}, errDeviceNotFound // another claimant won, or it moved (released) since we read it
	case errors.Is(err, store.ErrClaimLocked):
		return Bundle{}, errClaimLocked // locked by wrong codes since checkProof looked
	case err != nil:
		return Bundle{}, storeErr(err)
	}
	p.cfg.Observer.ObserveTokenIssued(mode)

	b := Bundle{Token: token, AssignedID: assigned, ExpiresAt: e.ExpiresAt, OBFName: obfName}
	if mode == store.ModeUntrusted {
		// Only an untrusted OBF needs to be told where and whom to trust: a
		// trusted one is the MEF for the device itself (docs/architecture.md
		// "Roles").
		b.MEFURI, b.TrustAnchor, b.TrustAnchorSHA256 = p.cfg.MEFURI, p.anchorPEM, p.anchorSHA256
	}
	return b, nil
}

// checkProof checks the proof of control of d for a token of tenant. When
// tenant is not the device's, the token is a claim: vouching proves nothing
// then (a trusted OBF vouches for its own stakeholder's devices only), and a
// proof method the device lacks is 404, exactly as for a device that does
// not exist, so that a claimant cannot tell another tenant's unowned devices
// apart; a wrong proof stays 403 (the claim lockouts limit guessing).
//
// A correct claim code returns the bookkeeping the token's transaction
// must apply (store.IssueToken): the code is compared first and counted in
// the same transaction as the token, so a request costs one commit.
// Locks are looked at before the comparison, and a wrong code is counted
// in a transaction that refuses it if the account is locked by then: a
// locked caller learns nothing from the answer. Wrong codes throttle the
// claimant (its account, and its source address) and never the device, so
// an attacker cannot keep the owner or a rightful claimant out
// (store/claims.go has the device's ceiling).
func (p *Portal) checkProof(ctx context.Context, who Principal, d store.Device, tenant string, proof Proof) (*store.ClaimCheck, error) {
	claim := tenant != d.Tenant
	n := 0
	for _, given := range []bool{proof.ClaimCode != "", proof.Nonce != "" || proof.Signature != "", proof.Vouch} {
		if given {
			n++
		}
	}
	if n != 1 {
		return nil, errBadProof
	}
	now := p.now()
	switch {
	case proof.ClaimCode != "":
		if len(d.ClaimCodeHash) == 0 {
			if claim {
				return nil, errDeviceNotFound
			}
			return nil, apierr.New(http.StatusConflict, "no_claim_code", "this device was pre-enrolled without a claim code")
		}
		// Parallel guesses cannot slip past the limit: every wrong code is
		// counted by a transaction that first checks the locks, and a right
		// one by the token's, which checks them too; in any serial order of
		// those transactions, the ones after the limit are refused.
		src := ratelimit.AddrOf(who.Source)
		if wait := p.claimSources.Wait(src); wait > 0 {
			return nil, &apierr.Error{Status: http.StatusTooManyRequests, Code: "claim_locked",
				Message: "too many wrong claim codes from this address: try again later", RetryAfter: int(wait.Seconds()) + 1}
		}
		if locked, err := p.st.ClaimLocked(ctx, d.ID, who.Stakeholder.ID, now); err != nil {
			return nil, storeErr(err)
		} else if locked {
			return nil, errClaimLocked
		}
		h, err := p.claimHash(ctx, d.DeviceID, strings.TrimSpace(proof.ClaimCode))
		if err != nil {
			return nil, err
		}
		if subtle.ConstantTimeCompare(h, d.ClaimCodeHash) != 1 {
			p.claimSources.Failed(src)
			err := p.st.ClaimFailure(ctx, d.ID, who.Stakeholder.ID, now, p.cfg.ClaimMaxFailures, p.cfg.ClaimMaxFailuresAccount, p.cfg.ClaimLockout,
				store.AuditEvent{At: now, Tenant: d.Tenant, Actor: who.actor(), Action: "device.claim_failure", Subject: d.ID, Detail: map[string]any{}})
			switch {
			case errors.Is(err, store.ErrClaimLocked):
				return nil, errClaimLocked
			case err != nil:
				return nil, storeErr(err)
			}
			return nil, errWrongClaim
		}
		return &store.ClaimCheck{StakeholderID: who.Stakeholder.ID, Now: now, DeviceMax: p.cfg.ClaimMaxFailures,
			StakeholderMax: p.cfg.ClaimMaxFailuresAccount, LockFor: p.cfg.ClaimLockout}, nil
	case proof.Vouch:
		if claim {
			return nil, errDeviceNotFound
		}
		// The device's current tenant, not the token's: vouching proves
		// control only of a device already the OBF's stakeholder's.
		if who.OBF == nil || !who.OBF.Trusted || who.OBF.StakeholderID != d.Tenant {
			return nil, apierr.New(http.StatusForbidden, "not_a_trusted_obf", "only a trusted OBF of this device's stakeholder, calling with its client certificate, may vouch")
		}
		return nil, nil
	}
	if proof.Nonce == "" || proof.Signature == "" {
		return nil, errBadProof
	}
	if len(d.DeviceCertDER) == 0 {
		if claim {
			return nil, errDeviceNotFound
		}
		return nil, apierr.New(http.StatusConflict, "no_device_certificate", "this device has no certificate to prove control with")
	}
	sig, err := base64.StdEncoding.DecodeString(proof.Signature)
	if err != nil {
		return nil, apierr.New(http.StatusBadRequest, "bad_signature", "signature must be base64")
	}
	cert, err := x509.ParseCertificate(d.DeviceCertDER)
	if err != nil {
		return nil, err
	}
	ok, err := p.st.TakeNonce(ctx, d.ID, who.Stakeholder.ID, sha(proof.Nonce), now)
	if err != nil {
		return nil, storeErr(err)
	}
	if !ok {
		return nil, apierr.New(http.StatusForbidden, "bad_nonce", "the nonce is unknown, used or expired: ask for a new one")
	}
	if !verifyNonce(cert.PublicKey, []byte(proof.Nonce), sig) {
		return nil, apierr.New(http.StatusForbidden, "bad_signature", "the signature does not verify with the device's certificate")
	}
	return nil, nil
}

// verifyNonce checks a signature over the nonce's ASCII bytes: ECDSA (ASN.1)
// and RSA PKCS#1 v1.5 over SHA-256, or Ed25519 over the nonce itself.
func verifyNonce(pub crypto.PublicKey, nonce, sig []byte) bool {
	digest := sha256.Sum256(nonce)
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return ecdsa.VerifyASN1(k, digest[:], sig)
	case *rsa.PublicKey:
		return rsa.VerifyPKCS1v15(k, crypto.SHA256, digest[:], sig) == nil
	case ed25519.PublicKey:
		return ed25519.Verify(k, nonce, sig)
	}
	return false
}

// newAssignedID is an SP-relative AE-ID ("S" + 26 base32 characters, 130
// random bits) or a CSE-ID ("/" + the same), unique without a lookup
// (docs/onem2m.md "Identifiers").
func newAssignedID(kind string) (string, error) {
	b := make([]byte, 17)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	id := strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))[:26]
	switch kind {
	case "", "ae":
		return "S" + id, nil
	case "cse":
		return "/" + id, nil
	}
	return "", apierr.New(http.StatusBadRequest, "bad_assigned_id_type", "assignedIdType is ae or cse")
}
