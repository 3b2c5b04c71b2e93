package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"
)

// Enrolment states and modes.
const (
	EnrolmentIssued    = "issued"
	EnrolmentRedeemed  = "redeemed"
	EnrolmentExpired   = "expired"
	EnrolmentCancelled = "cancelled"

	ModeUntrusted = "untrusted" // the Enrollee redeems over RSPF
	ModeTrusted   = "trusted"   // a trusted OBF forwards the credential
)

// Enrolment is a token the portal issued, stored by its SHA-256 hash only.
type Enrolment struct {
	TokenHash     []byte
	DeviceID      string
	AssignedID    string
	StakeholderID string
	Tenant        string
	// OBFID is the on-boarding function the token was issued to; for the
	// trusted mode only that OBF may forward with it.
	OBFID *string
	Mode  string
	// DeviceCertSHA256 binds the token to the device's existing
	// certificate: the Enrollee's TLS client certificate must be it.
	DeviceCertSHA256 []byte
	ExpiresAt        time.Time
	State            string
	CreatedAt        time.Time
	RedeemedAt       *time.Time
	CredentialID     *string
	RequestID        *string
	PublicKeySHA256  []byte
}

const enrolmentColumns = `token_hash, device_id, assigned_id, stakeholder_id, tenant, obf_id, mode,
	device_cert_sha256, expires_at, state, created_at, redeemed_at, credential_id, request_id, public_key_sha256`

func scanEnrolment(r row) (Enrolment, error) {
	var e Enrolment
	err := r.Scan(&e.TokenHash, &e.DeviceID, &e.AssignedID, &e.StakeholderID, &e.Tenant, &e.OBFID, &e.Mode,
		&e.DeviceCertSHA256, &e.ExpiresAt, &e.State, &e.CreatedAt, &e.RedeemedAt, &e.CredentialID, &e.RequestID,
		&e.PublicKeySHA256)
	return e, err
}

// CreateEnrolment records a new token. The caller (the portal) cancels any
// open token of the device in the same call: a device has one open token.
func (s *Store) CreateEnrolment(ctx context.Context, e Enrolment) error {
	if len(e.TokenHash) != 32 || e.DeviceID == "" || e.AssignedID == "" || e.Tenant == "" {
		return errors.New("create enrolment: token hash, device, assigned ID and tenant are required")
	}
	if e.Mode != ModeTrusted && e.Mode != ModeUntrusted {
		return fmt.Errorf("create enrolment: mode %q", e.Mode)
	}
	if e.Mode == ModeTrusted && e.OBFID == nil {
		return errors.New("create enrolment: a trusted enrolment names its OBF")
	}
	e.State = EnrolmentIssued
	err := s.tx(ctx, "create_enrolment", func(q querier) error {
		if _, err := q.exec(ctx, `UPDATE enrolments SET state = 'cancelled' WHERE device_id = $1 AND state = 'issued'`, e.DeviceID); err != nil {
			return err
		}
		_, err := q.exec(ctx, `INSERT INTO enrolments (`+enrolmentColumns+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL, NULL, NULL, NULL)`,
			e.TokenHash, e.DeviceID, e.AssignedID, e.StakeholderID, e.Tenant, e.OBFID, e.Mode,
			e.DeviceCertSHA256, e.ExpiresAt.UTC(), e.State, e.CreatedAt.UTC())
		return err
	})
	if err != nil {
		return fmt.Errorf("create enrolment: %w", err)
	}
	return nil
}

// Enrolment returns the enrolment of a token hash. The MEF reads it before
// it signs anything, so a bad token costs no HSM time; Redeem checks again
// atomically.
func (s *Store) Enrolment(ctx context.Context, tokenHash []byte) (Enrolment, error) {
	var e Enrolment
	err := s.read(ctx, func(q querier) (err error) {
		e, err = scanEnrolment(q.queryRow(ctx, `SELECT `+enrolmentColumns+` FROM enrolments WHERE token_hash = $1`, tokenHash))
		return err
	})
	if errors.Is(err, ErrNotFound) {
		return e, ErrTokenUnknown
	}
	if err != nil {
		return e, fmt.Errorf("enrolment: %w", err)
	}
	return e, nil
}

// Redemption asks to redeem a token and record the credential it bought,
// in one transaction.
type Redemption struct {
	TokenHash []byte
	// RequestID identifies the client's request; a retry with the same ID
	// (or, for certificates, the same public key) gets the credential that
	// was recorded, not an error. Required.
	RequestID string
	// Presented identity, checked against the token's bindings.
	AssignedID       string
	Mode             string
	OBFID            string // the forwarding OBF (trusted mode)
	DeviceCertSHA256 []byte // the Enrollee's TLS client certificate, if any
	Now              time.Time
	// Credential is what to record. Its EnrolmentToken, AssignedID and
	// DeviceID are set from the enrolment.
	Credential Credential
}

// Redeemed is a redemption's outcome.
type Redeemed struct {
	Credential Credential
	// Replayed: the token had been redeemed by this same request before;
	// Credential is the one recorded then.
	Replayed bool
}

// Check reports whether e may be redeemed by r, without writing: the same
// rules Redeem applies inside its transaction. A replay of an earlier
// redemption by the same request is reported as (true, nil).
func (e Enrolment) Check(r Redemption) (replay bool, err error) {
	switch {
	case r.AssignedID != "" && r.AssignedID != e.AssignedID:
		return false, fmt.Errorf("%w: assigned ID", ErrTokenMismatch)
	case r.Mode != e.Mode:
		return false, fmt.Errorf("%w: the token is for the %s path", ErrTokenMismatch, e.Mode)
	case e.Mode == ModeTrusted && (e.OBFID == nil || *e.OBFID != r.OBFID):
		return false, fmt.Errorf("%w: the token was issued to another OBF", ErrTokenMismatch)
	case len(e.DeviceCertSHA256) > 0 && !bytes.Equal(e.DeviceCertSHA256, r.DeviceCertSHA256):
		return false, fmt.Errorf("%w: the enrolment is bound to the device's existing certificate", ErrTokenMismatch)
	}
	switch e.State {
	case EnrolmentIssued:
		if !r.Now.Before(e.ExpiresAt) {
			return false, ErrTokenExpired
		}
		return false, nil
	case EnrolmentRedeemed:
		if e.RequestID != nil && *e.RequestID == r.RequestID ||
			len(e.PublicKeySHA256) > 0 && bytes.Equal(e.PublicKeySHA256, r.Credential.PublicKeySHA256) {
			return true, nil
		}
		return false, ErrTokenRedeemed
	case EnrolmentExpired:
		return false, ErrTokenExpired
	case EnrolmentCancelled:
		return false, ErrTokenCancelled
	}
	return false, fmt.Errorf("enrolment in unknown state %q", e.State)
}

// redeemOne is one redemption inside a transaction. Refusals (a redeemed,
// expired or mismatched token) come back as itemErr and write nothing, so
// the transaction and its other items go on; err is a database failure that
// aborts the transaction.
func redeemOne(ctx context.Context, q querier, r Redemption) (out Redeemed, itemErr, err error) {
	e, err := scanEnrolment(q.queryRow(ctx, `SELECT `+enrolmentColumns+` FROM enrolments WHERE token_hash = $1`, r.TokenHash))
	if errors.Is(err, ErrNotFound) {
		return out, ErrTokenUnknown, nil
	}
	if err != nil {
		return out, nil, err
	}
	replay, refusal := e.Check(r)
	if refusal != nil {
		return out, refusal, nil
	}
	if replay {
		if e.CredentialID == nil {
			return out, fmt.Errorf("enrolment redeemed without a credential"), nil
		}
		c, err := scanCredential(q.queryRow(ctx, `SELECT `+credentialColumns+` FROM credentials WHERE id = $1`, *e.CredentialID))
		if err != nil {
			return out, nil, err
		}
		return Redeemed{Credential: c, Replayed: true}, nil, nil
	}

	c := r.Credential
	c.AssignedID, c.DeviceID, c.Tenant, c.EnrolmentToken = e.AssignedID, e.DeviceID, e.Tenant, e.TokenHash
	if c.Status == "" {
		c.Status = StatusActive
	}
	if c.CreatedAt.IsZero() {
		c.CreatedAt = r.Now
	}
	if err := c.validate(); err != nil {
		return out, err, nil
	}
	n, err := q.exec(ctx, `UPDATE enrolments SET state = 'redeemed', redeemed_at = $2, credential_id = $3,
		request_id = $4, public_key_sha256 = $5 WHERE token_hash = $1 AND state = 'issued'`,
		r.TokenHash, r.Now.UTC(), c.ID, r.RequestID, c.PublicKeySHA256)
	if err != nil {
		return out, nil, err
	}
	if n != 1 {
		// Serializable isolation makes this unreachable; if it happens, the
		// transaction must not record a credential for a token it lost.
		return out, nil, fmt.Errorf("redeem: token changed under the transaction")
	}
	if err := insertCredential(ctx, q, c); err != nil {
		return out, nil, err
	}
	if _, err := q.exec(ctx, `UPDATE devices SET state = 'enrolled', assigned_id = $2, updated_at = $3 WHERE id = $1`,
		e.DeviceID, e.AssignedID, r.Now.UTC()); err != nil {
		return out, nil, err
	}
	return Redeemed{Credential: c}, nil, nil
}
