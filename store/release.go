package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/credfactory/credfactory/crlreason"
)

// ReleaseSUIDs are the usages a release (ownership transfer, factory reset)
// revokes. docs/onem2m.md "Usage codes" (TS-0004 m2m:suid): "A factory reset
// removes every SAEF, ESPrim and ESData credential of the device: SUIDs
// 12/22/32/42, 13/23/33/43, 14/15/24/25/34/35". To those the release adds
// 21 (RSPF-provisioned key with the MAF) and 40/41 (certificates with the
// MEF and the MAF): they were provisioned for the assigned ID the release
// withdraws, and left active they would let the old owner's software keep
// authenticating to the MAF and MEF as an identity no one owns. Kept: 10 and
// 11, the pre-provisioned keys with the MEF and MAF, which are the device's
// factory identity (docs/architecture.md "Roles": keys from manufacture
// only prove identity during enrolment) and survive a factory reset.
var ReleaseSUIDs = []int{
	12, 22, 32, 42, // SAEF
	13, 23, 33, 43, // ESPrim
	14, 15, 24, 25, 34, 35, // ESData (encryption, signature)
	21, 40, 41, // bound to the withdrawn assigned ID
}

// Release asks to hand a device back: the ownership-transfer step.
type Release struct {
	DeviceID string
	// Tenant, when set, must be the device's tenant (its owner releasing
	// it); empty is an sp-admin forcing the release.
	Tenant string
	// Reason is the RFC 5280 code the credentials are revoked with
	// (default: affiliationChanged, the subject's owner changed).
	Reason int
	// Note is the free-text reason for the audit trail.
	Note  string
	Actor string
	At    time.Time
	// ClaimCodeHash replaces the device's claim code (the keyed hash of a
	// fresh code the releasing party hands to the next owner); nil leaves
	// it with none. Either way the old code no longer claims the device.
	ClaimCodeHash []byte
}

// Released is a release's outcome.
type Released struct {
	// Revoked are the Credential-IDs this release revoked (sorted).
	Revoked []string
	// Cancelled is how many open tokens it cancelled.
	Cancelled int64
	// From is the tenant that lost the device; To the one holding it now
	// (its manufacturer).
	From, To string
	// AssignedID is the identity the release withdrew, if any.
	AssignedID *string
}

// Release transfers a device out of its owner's hands in one serializable
// transaction: it revokes the device's ReleaseSUIDs credentials, cancels its
// open tokens, and returns it, pre-enrolled and without an owner or assigned
// ID, to its manufacturer's tenant, with the actor and reason in the audit
// trail of both tenants. An unknown device, or one of another tenant, is
// ErrNotFound.
//
// The tenant becomes the manufacturer's because the manufacturer uploaded
// the device and is the one party with a standing claim on it: the device is
// back where the upload left it (HandOver may pass it on again), marked
// released (released_at: only a released device is claimable), the old
// owner's tenant no longer matches (it sees nothing), and a new stakeholder
// takes it by proving control. The assigned ID is cleared so the next
// owner's enrolment gets a fresh one: the old ID stays in the credential
// history only. Claim lockouts are kept: a release must not reset a guessing
// budget.
//
// The release withdraws the old proof of control: the claim code becomes
// r.ClaimCodeHash (a fresh code or none), so whoever read the label before,
// the releasing owner included, cannot claim the device back with it; the
// outstanding nonces of the device are dropped. A device's own key still
// proves control by signing a nonce (docs/ownership.md).
//
// A redemption racing the release cannot leave an active credential: both
// write the token's enrolment row (the release cancels it, the redemption
// reads it as 'issued' and marks it redeemed in the same transaction, see
// redeemBatch), so under SERIALIZABLE one of them aborts and retries and
// then sees the other's outcome: the redemption finds the token cancelled, or
// the release finds the credential and revokes it. On SQLite both take the
// single writer lock (BEGIN IMMEDIATE) and run one after the other.
func (s *Store) Release(ctx context.Context, r Release) (Released, error) {
	if r.DeviceID == "" || r.At.IsZero() {
		return Released{}, errors.New("release: device ID and time are required")
	}
	if !crlreason.Revocable(r.Reason) {
		return Released{}, fmt.Errorf("release: %w: reason %d is not an RFC 5280 CRLReason", ErrInvalid, r.Reason)
	}
	var out Released
	err := s.tx(ctx, "release", func(q querier) error {
		out = Released{}
		var manufacturer string
		err := q.queryRow(ctx, `SELECT tenant, manufacturer_id, assigned_id FROM devices WHERE id = $1`, r.DeviceID).
			Scan(&out.From, &manufacturer, &out.AssignedID)
		if err != nil {
			return err
		}
		if r.Tenant != "" && r.Tenant != out.From {
			return ErrNotFound // another tenant's device does not exist for it
		}
		out.To = manufacturer
		if out.Revoked, err = revokeIn(ctx, q, Revocation{DeviceID: r.DeviceID, SUIDs: ReleaseSUIDs, Reason: r.Reason,
			At: r.At, Actor: r.Actor}); err != nil {
			return err
		}
		now := r.At.UTC()
		counts, err := q.execBatch(ctx, []stmt{
			{`UPDATE enrolments SET state = 'cancelled' WHERE device_id = $1 AND state = 'issued'`, []any{r.DeviceID}, -1},
			{`UPDATE devices SET owner_id = NULL, tenant = manufacturer_id, state = 'pre-enrolled', assigned_id = NULL,
				claim_code_hash = $3, updated_at = $2, released_at = $2 WHERE id = $1`, []any{r.DeviceID, now, r.ClaimCodeHash}, 1},
			{`DELETE FROM claim_nonces WHERE device_id = $1`, []any{r.DeviceID}, -1},
		})
		if err != nil {
			return err
		}
		if counts[1] != 1 {
			return fmt.Errorf("device %s changed under the release", r.DeviceID)
		}
		out.Cancelled = counts[0]
		detail := map[string]any{"reason": r.Reason, "note": r.Note, "revoked": len(out.Revoked),
			"cancelledTokens": out.Cancelled, "from": out.From, "to": out.To, "newClaimCode": r.ClaimCodeHash != nil}
		if out.AssignedID != nil {
			detail["assignedId"] = *out.AssignedID
		}
		// The old tenant keeps the record of what it gave up; the new one
		// sees where the device's history resumes.
		audits := []stmt{auditStmt(AuditEvent{At: r.At, Tenant: out.From, Actor: r.Actor, Action: "device.release", Subject: r.DeviceID, Detail: detail})}
		if out.To != out.From {
			audits = append(audits, auditStmt(AuditEvent{At: r.At, Tenant: out.To, Actor: r.Actor, Action: "device.release", Subject: r.DeviceID, Detail: detail}))
		}
		return execBatch(ctx, q, audits)
	})
	if err != nil {
		return Released{}, fmt.Errorf("release %s: %w", r.DeviceID, err)
	}
	return out, nil
}
