package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/credfactory/credfactory/crlreason"
)

// Credential types and states.
const (
	TypeX509 = "x509"
	TypePSK  = "psk"

	StatusActive  = "active"
	StatusRevoked = "revoked"
	StatusExpired = "expired"

	SourceRSPF     = "rspf"
	SourceForward  = "forward"
	SourceRegister = "register"
)

// Credential is one credential the MAF holds: a certificate, or a shared key
// kept only as a derivation context (MEF-derived) or sealed by the KEK
// (forwarded by a trusted OBF). Never the usable key.
type Credential struct {
	// ID is the oneM2M Credential-ID, "<type>-<value>" (TS-0003 §10.4).
	ID         string
	AssignedID string
	DeviceID   string
	// Tenant is the administrating stakeholder (adminFQDN, TS-0003 §8.8):
	// every lookup is scoped by it where a stakeholder asks.
	Tenant string
	Type   string
	SUID   int

	// Certificates.
	Serial          *string
	CertSHA256      []byte
	CertDER         []byte
	PublicKeySHA256 []byte

	// Shared keys.
	KeyID      *string
	KeID       *string
	KDFContext []byte
	SealedKey  []byte

	// TargetIDs may fetch the key (TS-0003 fetchCredentials).
	TargetIDs []string

	NotBefore        time.Time
	NotAfter         time.Time
	Status           string
	RevokedAt        *time.Time
	RevocationReason *int
	Source           string
	OBFID            *string
	EnrolmentToken   []byte
	CreatedAt        time.Time
}

const credentialColumns = `id, assigned_id, device_id, tenant, type, suid, serial, cert_sha256, cert_der,
	public_key_sha256, key_id, ke_id, kdf_context, sealed_key, target_ids, not_before, not_after, status,
	revoked_at, revocation_reason, source, obf_id, enrolment_token_hash, created_at`

func scanCredential(r row) (Credential, error) {
	var c Credential
	var targets string
	err := r.Scan(&c.ID, &c.AssignedID, &c.DeviceID, &c.Tenant, &c.Type, &c.SUID, &c.Serial, &c.CertSHA256,
		&c.CertDER, &c.PublicKeySHA256, &c.KeyID, &c.KeID, &c.KDFContext, &c.SealedKey, &targets, &c.NotBefore,
		&c.NotAfter, &c.Status, &c.RevokedAt, &c.RevocationReason, &c.Source, &c.OBFID, &c.EnrolmentToken, &c.CreatedAt)
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal([]byte(targets), &c.TargetIDs); err != nil {
		return c, fmt.Errorf("credential %s: target IDs: %w", c.ID, err)
	}
	c.NotBefore, c.NotAfter, c.CreatedAt = c.NotBefore.UTC(), c.NotAfter.UTC(), c.CreatedAt.UTC()
	return c, nil
}

func insertCredentialStmt(c Credential) (stmt, error) {
	targets, err := targetsJSON(c.TargetIDs)
	if err != nil {
		return stmt{}, err
	}
	return stmt{`INSERT INTO credentials (` + credentialColumns + `, issuer_key_id)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25)`,
		[]any{c.ID, c.AssignedID, c.DeviceID, c.Tenant, c.Type, c.SUID, c.Serial, c.CertSHA256, c.CertDER,
			c.PublicKeySHA256, c.KeyID, c.KeID, c.KDFContext, c.SealedKey, string(targets), c.NotBefore.UTC(),
			c.NotAfter.UTC(), c.Status, c.RevokedAt, c.RevocationReason, c.Source, c.OBFID, c.EnrolmentToken,
			c.CreatedAt.UTC(), issuerKeyIDOf(c)}, 1}, nil
}

func insertCredential(ctx context.Context, q querier, c Credential) error {
	s, err := insertCredentialStmt(c)
	if err != nil {
		return err
	}
	_, err = q.exec(ctx, s.sql, s.args...)
	return err
}

func (c Credential) validate() error {
	switch {
	case c.ID == "" || c.AssignedID == "" || c.DeviceID == "" || c.Tenant == "":
		return errors.New("credential needs an ID, assigned ID, device ID and tenant")
	case c.Type == TypeX509 && (len(c.CertDER) == 0 || len(c.CertSHA256) != 32 || c.Serial == nil):
		return errors.New("certificate credential needs DER, SHA-256 and serial")
	case c.Type == TypePSK && c.KeyID == nil:
		return errors.New("shared-key credential needs a key ID")
	case c.Type == TypePSK && (len(c.KDFContext) == 0) == (len(c.SealedKey) == 0):
		return errors.New("shared-key credential needs exactly one of a derivation context and a sealed key")
	case c.Type != TypeX509 && c.Type != TypePSK:
		return fmt.Errorf("credential type %q", c.Type)
	case !c.NotAfter.After(c.NotBefore):
		return errors.New("credential expires before it starts")
	}
	return nil
}

// RegisterCredential records a credential outside an enrolment (the MAF key
// registration procedure, TS-0003 §8.8).
func (s *Store) RegisterCredential(ctx context.Context, c Credential) error {
	if err := c.validate(); err != nil {
		return fmt.Errorf("register credential: %w", err)
	}
	if err := s.tx(ctx, "register_credential", func(q querier) error { return insertCredential(ctx, q, c) }); err != nil {
		return fmt.Errorf("register credential %s: %w", c.ID, err)
	}
	return nil
}

// CredentialBy names the column a lookup uses.
type CredentialBy string

// Lookups the MAF offers (issue: retrieve by assigned ID, Credential-ID,
// key ID, certificate serial or fingerprint).
const (
	ByID         CredentialBy = "id"
	ByKeyID      CredentialBy = "key_id"
	BySerial     CredentialBy = "serial"
	ByCertSHA256 CredentialBy = "cert_sha256"
)

// Credential returns the credential whose column by equals value.
func (s *Store) Credential(ctx context.Context, by CredentialBy, value any) (Credential, error) {
	switch by {
	case ByID, ByKeyID, BySerial, ByCertSHA256:
	default:
		return Credential{}, fmt.Errorf("credential lookup by %q", by)
	}
	var c Credential
	err := s.read(ctx, func(q querier) (err error) {
		c, err = scanCredential(q.queryRow(ctx, `SELECT `+credentialColumns+` FROM credentials WHERE `+string(by)+` = $1`, value))
		return err
	})
	if err != nil {
		return c, fmt.Errorf("credential by %s: %w", by, err)
	}
	return c, nil
}

// CredentialForTarget finds the shared key a Target fetches with
// /fetchCredentials/<KeID>/<SUID> (TS-0003 §8.3.5).
func (s *Store) CredentialForTarget(ctx context.Context, keID string, suid int) ([]Credential, error) {
	return s.listCredentials(ctx, `WHERE ke_id = $1 AND suid = $2`, keID, suid)
}

// Credentials lists an assigned ID's credentials, oldest first: the history
// a renewal or transfer leaves behind is kept.
func (s *Store) Credentials(ctx context.Context, assignedID string) ([]Credential, error) {
	return s.listCredentials(ctx, `WHERE assigned_id = $1`, assignedID)
}

// CredentialsOf lists a device's credentials of one tenant, oldest first
// ("" is every tenant's, for an sp-admin): the device page shows its
// viewer's own history, across the assigned IDs the device had (a release
// withdraws one, a claim brings a fresh one).
func (s *Store) CredentialsOf(ctx context.Context, deviceID, tenant string) ([]Credential, error) {
	if tenant == "" {
		return s.listCredentials(ctx, `WHERE device_id = $1`, deviceID)
	}
	return s.listCredentials(ctx, `WHERE device_id = $1 AND tenant = $2`, deviceID, tenant)
}

func (s *Store) listCredentials(ctx context.Context, where string, args ...any) ([]Credential, error) {
	out, err := list(ctx, s, scanCredential, `SELECT `+credentialColumns+` FROM credentials `+where+` ORDER BY created_at, id`, args...)
	if err != nil {
		return nil, fmt.Errorf("list credentials: %w", err)
	}
	return out, nil
}

// Revocation says which active credentials to revoke and why. The scope is
// one credential (ID), all of a device's (DeviceID) or all of an assigned
// ID's (AssignedID); SUIDs narrows a device or assigned-ID scope to those
// usages. ID may be combined with DeviceID: the credential must then belong
// to that device (the portal revokes within a device its caller may see).
type Revocation struct {
	ID         string
	DeviceID   string
	AssignedID string
	// SUIDs, when set, limits a DeviceID or AssignedID revocation to these
	// usages (a factory reset revokes SAEF, ESPrim and ESData ones only).
	SUIDs []int
	// Reason is an RFC 5280 CRLReason code (ValidReason).
	Reason int
	At     time.Time
	// Tenant, when set, scopes the revocation to that tenant's credentials,
	// checked inside the transaction: a tenant caller (a portal user) never
	// revokes another tenant's rows, even if the device moved (released and
	// claimed) after it looked, or the device still carries the previous
	// owner's active credentials. Empty is an unscoped caller (sp-admin, MAF
	// administrator). Audit events always go to each credential's own tenant.
	Tenant string
	Actor  string
}

func (r Revocation) check() error {
	n := 0
	for _, set := range []bool{r.ID != "", r.AssignedID != "", r.DeviceID != "" && r.ID == ""} {
		if set {
			n++
		}
	}
	switch {
	case n != 1:
		return errors.New("give one of a credential ID, a device ID or an assigned ID")
	case r.ID != "" && len(r.SUIDs) > 0:
		return errors.New("a SUID set narrows a device or assigned-ID revocation, not one credential")
	case !crlreason.Revocable(r.Reason):
		return fmt.Errorf("%w: reason %d is not an RFC 5280 CRLReason (0-6, 9, 10)", ErrInvalid, r.Reason)
	case r.At.IsZero():
		return errors.New("a revocation needs its time")
	}
	return nil
}

// where is the revocation's scope as SQL, its parameters starting at $first.
func (r Revocation) where(first int) (string, []any) {
	var conds []string
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		conds = append(conds, strings.ReplaceAll(cond, "$?", "$"+strconv.Itoa(first+len(args)-1)))
	}
	if r.ID != "" {
		add("id = $?", r.ID)
	}
	if r.DeviceID != "" {
		add("device_id = $?", r.DeviceID)
	}
	if r.AssignedID != "" {
		add("assigned_id = $?", r.AssignedID)
	}
	if r.Tenant != "" {
		add("tenant = $?", r.Tenant)
	}
	if len(r.SUIDs) > 0 {
		ph := make([]string, len(r.SUIDs))
		for i, suid := range r.SUIDs {
			args = append(args, suid)
			ph[i] = "$" + strconv.Itoa(first+len(args)-1)
		}
		conds = append(conds, "suid IN ("+strings.Join(ph, ", ")+")")
	}
	return strings.Join(conds, " AND "), args
}

// Revoke marks the matching active credentials revoked and records who did
// it, in one transaction. It returns the revoked Credential-IDs; revoking
// an already revoked credential changes nothing and is not an error, an
// unknown credential ID is ErrNotFound.
//
// Set-based whatever the scope: one UPDATE ... RETURNING marks them all, and
// the audit rows go in one pipelined batch, so revoking a device's twenty
// credentials costs three round trips, not forty.
func (s *Store) Revoke(ctx context.Context, r Revocation) ([]string, error) {
	if err := r.check(); err != nil {
		return nil, fmt.Errorf("revoke: %w", err)
	}
	var revoked []string
	// Row-guarded (txRowGuarded): it writes every credential it revokes,
	// so a renewal, the sweep or another revocation of one of them meets
	// it on that row. What could add a credential to its scope meanwhile
	// is a pure insert (serializable would order it after the revocation
	// too) or a redemption, which also reads credentials (a replay) and
	// so could form a cycle: a redemption writes its device's row, and so
	// does a revocation by device or assigned ID (guardStmt), so the two
	// meet there. On PostgreSQL this spares revocations the predicate
	// locks on the device index's pages, which neighbouring devices' new
	// credentials are written into.
	err := s.txRowGuarded(ctx, "revoke", func(q querier) (err error) {
		if g, ok := r.guardStmt(); ok {
			if _, err := q.exec(ctx, g.sql, g.args...); err != nil {
				return err
			}
		}
		revoked, err = revokeIn(ctx, q, r)
		if err == nil && r.ID != "" && len(revoked) == 0 {
			where, args := r.where(1)
			var status string
			// ErrNotFound for an unknown ID (or one of another device or
			// tenant).
			return q.queryRow(ctx, `SELECT status FROM credentials WHERE `+where, args...).Scan(&status)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("revoke: %w", err)
	}
	return revoked, nil
}

// guardStmt writes the row of the device a revocation by device or
// assigned ID is about, without changing it: the row every redemption of
// that device writes too (see Revoke).
func (r Revocation) guardStmt() (stmt, bool) {
	switch {
	case r.ID != "":
		return stmt{}, false
	case r.DeviceID != "":
		return stmt{`UPDATE devices SET updated_at = updated_at WHERE id = $1`, []any{r.DeviceID}, -1}, true
	case r.AssignedID != "":
		return stmt{`UPDATE devices SET updated_at = updated_at WHERE assigned_id = $1`, []any{r.AssignedID}, -1}, true
	}
	return stmt{}, false
}

// revokeSQL marks the active credentials matching where ($3 on) revoked.
// "status BETWEEN 'active' AND 'active'" is "status = 'active'" that no
// planner can match to the partial index credentials_active_expiry, whose
// whole-index read would lock every active credential (see
// cancelOpenTokensSQL): the device's or assigned ID's index serves it.
func revokeSQL(where string) string {
	return `UPDATE credentials SET status = 'revoked', revoked_at = $1, revocation_reason = $2
		WHERE ` + where + ` AND status BETWEEN 'active' AND 'active' RETURNING id, tenant, suid`
}

// revokeIn is Revoke inside the caller's transaction (Release shares it).
func revokeIn(ctx context.Context, q querier, r Revocation) ([]string, error) {
	where, args := r.where(3)
	var ids []string
	var audits []stmt
	err := queryEach(ctx, q, revokeSQL(where), append([]any{r.At.UTC(), r.Reason}, args...),
		func(rs rows) error {
			var id, tenant string
			var suid int
			if err := rs.Scan(&id, &tenant, &suid); err != nil {
				return err
			}
			ids = append(ids, id)
			audits = append(audits, auditStmt(AuditEvent{At: r.At, Tenant: tenant, Actor: r.Actor, Action: "credential.revoke",
				Subject: id, Detail: map[string]any{"reason": r.Reason, "suid": suid}}))
			return nil
		})
	if err != nil {
		return nil, err
	}
	// RETURNING order is unspecified; callers and tests get a stable one.
	slices.Sort(ids)
	return ids, execBatch(ctx, q, audits)
}
