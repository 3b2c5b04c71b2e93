package portal

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/credfactory/credfactory/apierr"
	"github.com/credfactory/credfactory/crlreason"
	"github.com/credfactory/credfactory/kdf"
	"github.com/credfactory/credfactory/maf"
	"github.com/credfactory/credfactory/store"
)

// ReleaseRequest asks to release a device (ownership transfer). Both fields
// are optional.
type ReleaseRequest struct {
	// Reason is free text for the audit trail ("sold", "returned").
	Reason string `json:"reason,omitempty"`
	// RevocationReason is the RFC 5280 CRLReason name the credentials are
	// revoked with; default affiliationChanged (the owner changed).
	RevocationReason string `json:"revocationReason,omitempty"`
	// NewClaimCode false releases the device with no claim code at all
	// (it is then claimed by a nonce signed with its own key, or after its
	// manufacturer releases it again for a code); default true: a fresh
	// code for the releasing party to hand to the next owner.
	NewClaimCode *bool `json:"newClaimCode,omitempty"`
}

// ReleaseResult is a release's outcome and, when one was made, the
// device's new claim code: shown this once, stored only as its keyed hash.
type ReleaseResult struct {
	store.Released
	ClaimCode string
}

// claimCodeAlphabet is Crockford's base32 (no I, L, O, U): read off a
// screen and typed again without ambiguity.
const claimCodeAlphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// newClaimCode is 16 characters of claimCodeAlphabet (80 random bits) in
// groups of four: far above minClaimCodeBits, so the claim throttles
// (store/claims.go) hold any online guessing far below one success.
func newClaimCode() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	var out strings.Builder
	for i, c := range b {
		if i > 0 && i%4 == 0 {
			out.WriteByte('-')
		}
		out.WriteByte(claimCodeAlphabet[c&31])
	}
	return out.String()
}

// RevokeRequest revokes one credential of a device (CredentialID), the
// device's credentials of some usages (SUIDs), or, with neither, all of its
// credentials.
type RevokeRequest struct {
	CredentialID string `json:"credentialId,omitempty"`
	SUIDs        []int  `json:"suids,omitempty"`
	// Reason is an RFC 5280 CRLReason name; default unspecified.
	Reason string `json:"reason,omitempty"`
}

const maxNote = 500

var errCredentialNotFound = apierr.New(http.StatusNotFound, "credential_not_found", "no such credential on this device")

// Release hands a device back (store.Release): its credentials are revoked,
// its open tokens cancelled, and it returns, pre-enrolled and unowned, to
// its manufacturer, to be claimed afresh by whoever proves control of it.
// The old claim code stops working: the release brings a fresh one (the
// result's ClaimCode, for the releasing party to hand over) or, asked to,
// none (docs/ownership.md). A manufacturer holding a released device
// releases it again to issue another code.
// The device's owner (its subscriber, or the manufacturer while it still
// holds it) may release it, and an sp-admin may force it; another tenant
// gets 404, exactly as for a device that does not exist.
func (p *Portal) Release(ctx context.Context, who Principal, deviceID string, req ReleaseRequest) (ReleaseResult, error) {
	d, err := p.Device(ctx, who, deviceID)
	if err != nil {
		return ReleaseResult{}, err
	}
	// An installer works on the subscriber's devices but does not give them
	// away; a trusted OBF acts for a device, never on its ownership.
	if who.Via == "obf" {
		return ReleaseResult{}, errForbidden
	}
	if err := requireRole(who, store.RoleSubscriber, store.RoleManufacturer, store.RoleSPAdmin); err != nil {
		return ReleaseResult{}, err
	}
	note := strings.TrimSpace(req.Reason)
	if len(note) > maxNote {
		return ReleaseResult{}, apierr.New(http.StatusBadRequest, "bad_reason", "the reason is at most 500 characters")
	}
	code := crlreason.AffiliationChanged
	if req.RevocationReason != "" {
		if code, err = maf.ParseReason(req.RevocationReason); err != nil {
			return ReleaseResult{}, err
		}
	}
	var res ReleaseResult
	var codeHash []byte
	if req.NewClaimCode == nil || *req.NewClaimCode {
		// Hashed before anything is written: an HSM that cannot hash
		// leaves the device as it was.
		res.ClaimCode = newClaimCode()
		if codeHash, err = p.claimHash(ctx, d.DeviceID, res.ClaimCode); err != nil {
			return ReleaseResult{}, err
		}
	}
	res.Released, err = p.st.Release(ctx, store.Release{DeviceID: d.ID, Tenant: who.Tenant(), Reason: code, Note: note,
		Actor: who.actor(), At: p.now(), ClaimCodeHash: codeHash})
	if err == nil && len(res.Revoked) > 0 {
		p.revoked()
	}
	if errors.Is(err, store.ErrNotFound) {
		return ReleaseResult{}, errDeviceNotFound // released or moved under us
	}
	if err != nil {
		return ReleaseResult{}, storeErr(err)
	}
	return res, nil
}

// Revoke revokes one, some or all of a device's active credentials. Anyone
// who works on the device (its subscriber, installer or manufacturer) or an
// sp-admin may; revoking is always safe to allow, unlike releasing.
func (p *Portal) Revoke(ctx context.Context, who Principal, deviceID string, req RevokeRequest) ([]string, error) {
	d, err := p.Device(ctx, who, deviceID)
	if err != nil {
		return nil, err
	}
	if who.Via == "obf" {
		return nil, errForbidden
	}
	code, err := maf.ParseReason(req.Reason)
	if err != nil {
		return nil, err
	}
	if req.CredentialID != "" && len(req.SUIDs) > 0 {
		return nil, apierr.New(http.StatusBadRequest, "bad_request", "give credentialId or suids, not both")
	}
	for _, s := range req.SUIDs {
		if !kdf.SUID(s).Valid() {
			return nil, apierr.New(http.StatusBadRequest, "bad_suid", "suids must be oneM2M usage codes (TS-0004 m2m:suid)")
		}
	}
	// Tenant is checked again inside the store's transaction: the device
	// may be released and claimed by another tenant after Device read it,
	// and it may still carry its previous owner's active credentials;
	// neither is this caller's to revoke. An sp-admin (Tenant "") is
	// unscoped.
	rev := store.Revocation{DeviceID: d.ID, SUIDs: req.SUIDs, Reason: code, At: p.now(), Actor: who.actor(), Tenant: who.Tenant()}
	if req.CredentialID != "" {
		rev.ID = req.CredentialID // DeviceID stays: it must be this device's
	}
	ids, err := p.st.Revoke(ctx, rev)
	if err == nil && len(ids) > 0 {
		p.revoked()
	}
	if errors.Is(err, store.ErrNotFound) {
		return nil, errCredentialNotFound
	}
	if errors.Is(err, store.ErrInvalid) {
		return nil, apierr.New(http.StatusBadRequest, "bad_reason", err.Error())
	}
	return ids, storeErr(err)
}

// enrollable finds the device a caller asks a nonce or a token for, and the
// tenant the token will be for. A device the caller sees is its own tenant's.
// A released device, still unowned and pre-enrolled, may be claimed by a
// subscriber or an installer: the proof of control that follows (a claim
// code or a nonce signature) is what entitles them, and the claim limits on
// wrong codes hold as for any device. A device its manufacturer never
// handed over is not claimable: reading its label is no right to it. Any
// other device is 404.
//
// Device IDs are per manufacturer: when the reference names no
// manufacturer and several claimable devices share the ID, the claim code
// (code, when the proof is one) picks the device it belongs to; without
// one the caller must name the manufacturer (deviceId@manufacturerId). If
// no candidate's code matches, the first one is the device the wrong code
// is counted against.
func (p *Portal) enrollable(ctx context.Context, who Principal, ref, code string) (store.Device, string, error) {
	ds, err := p.named(ctx, ref)
	if err != nil {
		return store.Device{}, "", err
	}
	if d, ok, err := visible(who, ds); err != nil || ok {
		return d, d.Tenant, err
	}
	if requireRole(who, store.RoleSubscriber, store.RoleInstaller) != nil {
		return store.Device{}, "", errDeviceNotFound
	}
	ds = slices.DeleteFunc(ds, func(d store.Device) bool { return !claimable(d) })
	switch {
	case len(ds) == 0:
		return store.Device{}, "", errDeviceNotFound
	case len(ds) > 1 && code == "":
		return store.Device{}, "", errAmbiguousDevice
	case len(ds) > 1:
		// One hash for all: the code's hash depends on the device ID, which
		// they share.
		h, err := p.claimHash(ctx, ds[0].DeviceID, code)
		if err != nil {
			return store.Device{}, "", err
		}
		for _, d := range ds {
			if len(d.ClaimCodeHash) > 0 && subtle.ConstantTimeCompare(h, d.ClaimCodeHash) == 1 {
				return d, who.Tenant(), nil
			}
		}
	}
	return ds[0], who.Tenant(), nil
}

func claimable(d store.Device) bool {
	return d.ReleasedAt != nil && d.OwnerID == nil && d.State == store.DevicePreEnrolled
}

func (p *Portal) revoked() {
	if p.cfg.OnRevoke != nil {
		p.cfg.OnRevoke()
	}
}
