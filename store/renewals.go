package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/credfactory/credfactory/crlreason"
)

// Renewal refusals. The MEF maps them to answers; each says what the
// client must do instead.
var (
	// ErrCertSuperseded: the certificate was already renewed (by another
	// request or with another key): only its successor may renew.
	ErrCertSuperseded = errors.New("store: certificate superseded by a renewal")
	// ErrCertRevoked: the certificate is revoked; a revoked certificate never
	// renews (the device enrols afresh with a new token).
	ErrCertRevoked = errors.New("store: certificate revoked")
	// ErrCertExpired: the certificate is past its not-after (or marked expired
	// by the sweep); it no longer authenticates anything.
	ErrCertExpired = errors.New("store: certificate expired")
	// ErrRenewTooEarly: the renewal window (RenewBefore) has not opened yet.
	ErrRenewTooEarly = errors.New("store: too early to renew")
	// ErrNotRenewable: the credential is not a certificate.
	ErrNotRenewable = errors.New("store: only certificates renew")
)

// Renewal asks to replace an active certificate by a new one for the same
// assigned ID (EST simplereenroll, RFC 7030 §4.2.2).
//
// Policy: the old certificate is superseded in the transaction that records
// the new one (status revoked, RFC 5280 reason superseded, revoked_at), so
// it goes onto the CRL and OCSP answers "revoked". Keeping it valid until
// it expires (step-ca's default) would leave two live certificates per
// assigned ID for a whole lifetime, and a stolen old key would stay usable
// after the owner renewed; with supersession the holder of a stolen key is
// locked out by the owner's next renewal, and "the current certificate" is
// simply the active one. The switch-over risk (the device losing the answer
// after the old certificate was superseded) is what idempotent retries
// cover: the same old certificate with the same public key gets the
// certificate already issued.
type Renewal struct {
	// OldID is the Credential-ID of the certificate that authenticated the
	// request (the TLS client certificate).
	OldID string
	// Credential is the new certificate. AssignedID, DeviceID, Tenant, SUID
	// and Source are taken from the old one.
	Credential Credential
	Now        time.Time
	// RenewBefore, when positive, allows renewal only within this long
	// before the old certificate's not-after.
	RenewBefore time.Duration
	// RenewAfter, when positive, allows renewal only once the old
	// certificate is this old (since its not-before): each renewal puts a
	// superseded certificate on the CRL, so back-to-back renewals would let
	// one device inflate it.
	RenewAfter time.Duration
	// Actor goes to the audit trail.
	Actor string
}

// Renewed is a renewal's outcome.
type Renewed struct {
	Credential Credential
	// Old is the certificate renewed, as it was before this renewal.
	Old Credential
	// Replayed: the old certificate had already been renewed with this
	// public key; Credential is the certificate recorded then.
	Replayed bool
}

// TooEarlyError says when the renewal window opens. Young: the window is
// shut because the certificate is younger than the minimum age (RenewAfter),
// not because expiry is still far (RenewBefore).
type TooEarlyError struct {
	Opens time.Time
	Young bool
}

func (e *TooEarlyError) Error() string {
	return fmt.Sprintf("%v: the renewal window opens at %s", ErrRenewTooEarly, e.Opens.UTC().Format(time.RFC3339))
}

func (e *TooEarlyError) Unwrap() error { return ErrRenewTooEarly }

// CheckRenewal judges whether old may be renewed now for a key whose
// SubjectPublicKeyInfo hashes to publicKey. successor is the certificate
// that already replaced old, if any. A retry of the renewal that produced
// successor (same key, successor still current) is (true, nil), whatever
// the renewal window says now. renewBefore and renewAfter are Renewal's.
func CheckRenewal(old Credential, successor *Credential, publicKey []byte, now time.Time, renewBefore, renewAfter time.Duration) (replay bool, err error) {
	if old.Type != TypeX509 {
		return false, ErrNotRenewable
	}
	if successor != nil {
		if bytes.Equal(successor.PublicKeySHA256, publicKey) && successor.Status == StatusActive && now.Before(successor.NotAfter) {
			return true, nil
		}
		// "Renew with the successor" is only advice if the successor can:
		// after a release (or any revocation) or its expiry, say that.
		switch {
		case successor.Status == StatusRevoked && (successor.RevocationReason == nil || *successor.RevocationReason != crlreason.Superseded):
			return false, ErrCertRevoked
		case successor.Status == StatusExpired || successor.Status == StatusActive && !now.Before(successor.NotAfter):
			return false, ErrCertExpired
		}
		return false, ErrCertSuperseded
	}
	switch {
	case old.Status == StatusRevoked:
		return false, ErrCertRevoked
	case old.Status != StatusActive || !now.Before(old.NotAfter):
		return false, ErrCertExpired
	case renewBefore > 0 && now.Before(old.NotAfter.Add(-renewBefore)):
		return false, &TooEarlyError{Opens: old.NotAfter.Add(-renewBefore)}
	case renewAfter > 0 && now.Before(old.NotBefore.Add(renewAfter)):
		return false, &TooEarlyError{Opens: old.NotBefore.Add(renewAfter), Young: true}
	}
	return false, nil
}

// RenewalState reads the certificate credential oldID and its successor
// (nil when it was never renewed), for a check before any signing: Renew
// checks again atomically.
func (s *Store) RenewalState(ctx context.Context, oldID string) (old Credential, successor *Credential, err error) {
	err = s.read(ctx, func(q querier) (err error) {
		old, successor, err = renewalState(ctx, q, oldID)
		return err
	})
	if err != nil {
		return old, nil, fmt.Errorf("renewal of %s: %w", oldID, err)
	}
	return old, successor, nil
}

func renewalState(ctx context.Context, q querier, oldID string) (Credential, *Credential, error) {
	old, err := scanCredential(q.queryRow(ctx, `SELECT `+credentialColumns+` FROM credentials WHERE id = $1`, oldID))
	if err != nil {
		return old, nil, err
	}
	succ, err := scanCredential(q.queryRow(ctx, `SELECT `+prefixed("c.", credentialColumns)+`
		FROM renewals r JOIN credentials c ON c.id = r.new_id WHERE r.old_id = $1`, oldID))
	if errors.Is(err, ErrNotFound) {
		return old, nil, nil
	}
	if err != nil {
		return old, nil, err
	}
	return old, &succ, nil
}

// Renew records r.Credential as the renewal of r.OldID and supersedes the
// old certificate, in one transaction; the old row stays as history. A
// retry of a renewal that committed gets the recorded certificate back
// (Replayed), whatever certificate it brought this time.
func (s *Store) Renew(ctx context.Context, r Renewal) (Renewed, error) {
	if r.OldID == "" || r.Now.IsZero() {
		return Renewed{}, errors.New("renew: the old credential and the time are required")
	}
	var out Renewed
	// Row-guarded (txRowGuarded): every renewal writes the old
	// certificate's row (superseded, conditional on 'active'), and so does
	// whatever could invalidate it: a second renewal of it, its revocation
	// (alone, by usage, or with all of its device's: the successor has the
	// old one's usage), a release, the expiry sweep. Each pair meets on
	// that row; the renewals row's primary key backs it up.
	err := s.txRowGuarded(ctx, "renew", func(q querier) error {
		old, succ, err := renewalState(ctx, q, r.OldID)
		if err != nil {
			return err
		}
		replay, err := CheckRenewal(old, succ, r.Credential.PublicKeySHA256, r.Now, r.RenewBefore, r.RenewAfter)
		if err != nil {
			return err
		}
		if replay {
			out = Renewed{Credential: *succ, Old: old, Replayed: true}
			return nil
		}
		c := r.Credential
		c.AssignedID, c.DeviceID, c.Tenant, c.SUID = old.AssignedID, old.DeviceID, old.Tenant, old.SUID
		c.Status, c.RevokedAt, c.RevocationReason = StatusActive, nil, nil
		if c.Source == "" {
			c.Source = old.Source
		}
		if c.CreatedAt.IsZero() {
			c.CreatedAt = r.Now
		}
		if err := c.validate(); err != nil {
			return err
		}
		ins, err := insertCredentialStmt(c)
		if err != nil {
			return err
		}
		now := r.Now.UTC()
		if err := execBatch(ctx, q, []stmt{
			ins,
			// Conditional on 'active': a revocation that committed since the
			// read above wins, and this renewal aborts (want 1).
			{supersedeCertSQL, []any{old.ID, now, crlreason.Superseded}, 1},
			{`INSERT INTO renewals (old_id, new_id, created_at) VALUES ($1, $2, $3)`, []any{old.ID, c.ID, now}, 1},
			auditStmt(AuditEvent{At: now, Tenant: old.Tenant, Actor: r.Actor, Action: "credential.renew", Subject: c.ID,
				Detail: map[string]any{"supersedes": old.ID, "assignedId": old.AssignedID}}),
		}); err != nil {
			return err
		}
		out = Renewed{Credential: c, Old: old}
		return nil
	})
	if err != nil {
		return Renewed{}, fmt.Errorf("renew %s: %w", r.OldID, err)
	}
	return out, nil
}

// supersedeCertSQL marks a renewed certificate superseded. The status test
// is written as in revokeSQL, for the same reason.
const supersedeCertSQL = `UPDATE credentials SET status = 'revoked', revoked_at = $2, revocation_reason = $3
	WHERE id = $1 AND status BETWEEN 'active' AND 'active'`

// prefixed qualifies a column list with a table alias.
func prefixed(alias, columns string) string {
	var b bytes.Buffer
	b.WriteString(alias)
	for i := 0; i < len(columns); i++ {
		b.WriteByte(columns[i])
		if columns[i] == ',' {
			// Skip the spaces and newlines after the comma, then qualify.
			for i+1 < len(columns) && (columns[i+1] == ' ' || columns[i+1] == '\n' || columns[i+1] == '\t') {
				i++
				b.WriteByte(columns[i])
			}
			b.WriteString(alias)
		}
	}
	return b.String()
}

// supersedeKeysStmt revokes (reason superseded) the active shared keys of
// an assigned ID with the usage and targets of the key c that re-registers
// them (README "Renewal and expiry": shared keys are renewed by
// re-registration, TS-0003 §8.8). The targets
// count: keys of SUIDs 23-25 are per target (TS-0003 §10.3.3, the Kuc
// context names targetIds[0]), so a key for T2 must leave the key for T1.
// Targets are compared as the canonical JSON text insertCredentialStmt
// writes (targetsJSON). Conditional on 'active', so a key revoked for
// another reason keeps it.
//
// "status BETWEEN 'active' AND 'active'" keeps the planner off the partial
// index credentials_active_expiry, whose whole-index read would lock every
// active credential under SERIALIZABLE (see cancelOpenTokensSQL): the
// assigned ID's index serves it.
func supersedeKeysStmt(assignedID string, c Credential, at time.Time) (stmt, error) {
	targets, err := targetsJSON(c.TargetIDs)
	if err != nil {
		return stmt{}, err
	}
	return stmt{`UPDATE credentials SET status = 'revoked', revoked_at = $3, revocation_reason = $4
		WHERE assigned_id = $1 AND suid = $2 AND type = 'psk' AND status BETWEEN 'active' AND 'active' AND target_ids = $5`,
		[]any{assignedID, c.SUID, at.UTC(), crlreason.Superseded, targets}, -1}, nil
}

// targetsJSON is the stored form of a key's target IDs: a JSON array,
// sorted, so that one set of targets has one text whatever order a request
// listed them in (supersedeKeysStmt compares it).
func targetsJSON(ids []string) (string, error) {
	sorted := slices.Sorted(slices.Values(ids))
	if sorted == nil {
		sorted = []string{}
	}
	b, err := json.Marshal(sorted)
	return string(b), err
}
