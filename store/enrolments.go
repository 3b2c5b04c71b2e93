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
	// ExpectTenant, when set, is the device's tenant as the caller read
	// it: the enrolment is refused (ErrNotFound) if the device moved since.
	ExpectTenant string
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

// ClaimCheck is the claim-code bookkeeping of a token whose proof was a
// correct claim code: the same rules ClaimAttempt and ClaimSuccess apply in
// two transactions, applied inside the token's own (see CreateEnrolment).
type ClaimCheck struct {
	StakeholderID  string
	Now            time.Time
	DeviceMax      int
	StakeholderMax int
	LockFor        time.Duration
}

// CreateEnrolment records a new token. The caller (the portal) cancels any
// open token of the device in the same call: a device has one open token.
//
// e.Tenant is who the token is for. When it is not the device's tenant, the
// enrolment is a claim: the caller proved control of an unowned,
// pre-enrolled device (a released one, or one its manufacturer never handed
// over), and the device moves into e.Tenant with it, owned. A device that is
// owned, or past pre-enrolled, by then (a concurrent claim won) is
// ErrNotFound, and nothing is written; so is a device no longer in
// e.ExpectTenant, the tenant the caller read it in (the portal always sets
// it: a claim passes the manufacturer's tenant it saw).
func (s *Store) CreateEnrolment(ctx context.Context, e Enrolment) error {
	return s.IssueToken(ctx, e, nil, nil)
}

// tokenRefusal: the errors IssueToken's transaction refuses a token with,
// all of them before it writes anything.
func tokenRefusal(err error) bool {
	return errors.Is(err, ErrNotFound) || errors.Is(err, ErrClaimLocked)
}

// cancelOpenTokensSQL cancels a device's open tokens over
// enrolments_device_state. "state BETWEEN 'issued' AND 'issued'" is
// "state = 'issued'" written so that no planner can prove it implies the
// partial index enrolments_open_expiry's predicate: PostgreSQL otherwise
// serves the statement by reading that whole index (every open token of
// every device), a predicate lock that makes all token requests conflict.
const cancelOpenTokensSQL = `UPDATE enrolments SET state = 'cancelled'
	WHERE device_id = $1 AND state BETWEEN 'issued' AND 'issued'`

// issueTokenDeviceSQL moves the device to token-issued (and into the
// token's tenant, for a claim) when it is still where the caller saw it.
const issueTokenDeviceSQL = `UPDATE devices SET assigned_id = $2, updated_at = $3, released_at = NULL,
	owner_id = CASE WHEN tenant = $4 THEN owner_id ELSE $4 END, tenant = $4,
	state = CASE WHEN state = 'enrolled' THEN state ELSE 'token-issued' END,
	claim_failures = CASE WHEN $6 THEN 0 ELSE claim_failures END,
	claim_locked_until = CASE WHEN $6 THEN NULL ELSE claim_locked_until END
	WHERE id = $1 AND (tenant = $4 OR owner_id IS NULL AND state = 'pre-enrolled')
	AND ($5 = '' OR tenant = $5)`

// IssueToken is CreateEnrolment with the rest of a token request in the
// same transaction: claim bookkeeping (claim), the token and its audit
// event (audit, when not nil), so a token costs one commit. claim, when not nil, says the proof was a correct claim code:
// a device or account locked by wrong codes refuses it with ErrClaimLocked
// and nothing is written; otherwise the device's failure count is cleared
// and the account's stays as it was, except that an attempt reaching the
// account's limit locks it, exactly what ClaimAttempt then ClaimSuccess
// leave behind.
//
// Every statement is a key lookup (the device and stakeholder by primary
// key, the device's open tokens over enrolments_device_state). Every
// invariant is guarded by the device's row, which the transaction always
// writes, so it runs row-guarded (txRowGuarded): two tokens for different
// devices never conflict, two for one device serialize on its row (see
// deploy/cockroachdb/README.md, "Hot statements"). The stakeholder row is
// only read unless its limit is reached: many token requests of one
// account never write one row. On SQLite, concurrent tokens share a
// commit (groupCommit).
func (s *Store) IssueToken(ctx context.Context, e Enrolment, claim *ClaimCheck, audit *AuditEvent) error {
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
	var auditEvent stmt
	if audit != nil {
		auditEvent = auditStmt(*audit) // its ID is drawn once: a retry writes the same event
	}
	body := func(ctx context.Context, q querier) error {
		// The compare-and-swap on ExpectTenant ($5): an sp-admin may have
		// force-released the device after the portal read it; without it the
		// 'owner_id IS NULL' branch would take the device straight back to
		// its old tenant with the withdrawn assigned ID. $6 clears the
		// device's claim failures after a correct claim code.
		dev := stmt{issueTokenDeviceSQL, []any{e.DeviceID, e.AssignedID, e.CreatedAt.UTC(), e.Tenant, e.ExpectTenant, claim != nil}, -1}
		writes := []stmt{dev}
		if claim != nil {
			lock, err := claimSuccessStmt(ctx, q, e.DeviceID, *claim)
			if err != nil {
				return err
			}
			if lock != nil {
				writes = append(writes, *lock)
			}
		}
		writes = append(writes,
			stmt{cancelOpenTokensSQL, []any{e.DeviceID}, -1},
			stmt{`INSERT INTO enrolments (` + enrolmentColumns + `)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL, NULL, NULL, NULL)`,
				[]any{e.TokenHash, e.DeviceID, e.AssignedID, e.StakeholderID, e.Tenant, e.OBFID, e.Mode,
					e.DeviceCertSHA256, e.ExpiresAt.UTC(), e.State, e.CreatedAt.UTC()}, 1})
		if audit != nil {
			writes = append(writes, auditEvent)
		}
		if s.tokens != nil {
			// Inside a shared commit (groupCommit) a refusal must come
			// before any write: the device first.
			n, err := q.exec(ctx, dev.sql, dev.args...)
			if err != nil {
				return err
			}
			if n != 1 {
				return ErrNotFound
			}
			writes = writes[1:]
		}
		// One round trip on PostgreSQL. When the device's compare-and-swap
		// matched nothing the rest ran for nothing, and the rollback that
		// ErrNotFound causes takes it back.
		counts, err := q.execBatch(ctx, writes)
		if err != nil {
			return err
		}
		if s.tokens == nil && counts[0] != 1 {
			return ErrNotFound
		}
		if counts[len(counts)-1] != 1 {
			return errors.New("an insert wrote no row")
		}
		return nil
	}
	var err error
	if s.tokens != nil {
		// SQLite: many tokens per commit (groupCommit).
		err = s.tokens.do(ctx, body)
	} else {
		err = s.txRowGuarded(ctx, "create_enrolment", func(q querier) error { return body(ctx, q) })
	}
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

// EnrolmentsOfTokens returns the enrolments of many token hashes, keyed by
// the hash's bytes; unknown hashes are absent. A trusted OBF's batch reads
// its thousand tokens in a few statements instead of a read transaction
// each; Redeem still checks every one atomically.
func (s *Store) EnrolmentsOfTokens(ctx context.Context, tokenHashes [][]byte) (map[string]Enrolment, error) {
	hashes := make([]any, len(tokenHashes))
	for i, h := range tokenHashes {
		hashes[i] = h
	}
	out := make(map[string]Enrolment, len(hashes))
	err := s.read(ctx, func(q querier) error {
		clear(out)
		return queryIn(ctx, q, `SELECT `+enrolmentColumns+` FROM enrolments WHERE token_hash IN `, hashes, func(r rows) error {
			e, err := scanEnrolment(r)
			if err == nil {
				out[string(e.TokenHash)] = e
			}
			return err
		})
	})
	if err != nil {
		return nil, fmt.Errorf("enrolments of tokens: %w", err)
	}
	return out, nil
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
			// A retry is answered only within the token's own lifetime: after
			// it, token and request ID must not stay a way to get the
			// credential again.
			if !r.Now.Before(e.ExpiresAt) {
				return false, ErrTokenExpired
			}
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

// redeemBatch redeems items inside one transaction in three round trips,
// whatever their number: one query loads every enrolment (and one more the
// credentials of replays), Go decides each item, and one pipelined batch
// writes the winners. Refusals (a redeemed, expired or mismatched token) come
// back per item and write nothing, so the transaction and its other items go
// on; err is a database failure that aborts the transaction.
//
// Items are decided in order, so a token twice in one batch behaves as it
// would in two transactions: the first redeems it, the second is a replay
// (same request or key) or ErrTokenRedeemed.
func redeemBatch(ctx context.Context, q querier, items []Redemption) (outs []Redeemed, refusals []error, err error) {
	outs, refusals = make([]Redeemed, len(items)), make([]error, len(items))
	hashes := make([]any, 0, len(items))
	seen := map[string]bool{}
	for _, r := range items {
		if !seen[string(r.TokenHash)] {
			seen[string(r.TokenHash)] = true
			hashes = append(hashes, r.TokenHash)
		}
	}
	enrolments := make(map[string]*Enrolment, len(hashes))
	if err := queryIn(ctx, q, `SELECT `+enrolmentColumns+` FROM enrolments WHERE token_hash IN `, hashes, func(r rows) error {
		e, err := scanEnrolment(r)
		if err == nil {
			enrolments[string(e.TokenHash)] = &e
		}
		return err
	}); err != nil {
		return nil, nil, err
	}

	// Decide each item against the enrolment as this batch leaves it.
	inBatch := map[string]Credential{} // credentials this batch records, by ID
	var replays []any
	var writes []stmt
	for i, r := range items {
		e := enrolments[string(r.TokenHash)]
		if e == nil {
			refusals[i] = ErrTokenUnknown
			continue
		}
		replay, refusal := e.Check(r)
		if refusal != nil {
			refusals[i] = refusal
			continue
		}
		if replay {
			if e.CredentialID == nil {
				refusals[i] = errors.New("enrolment redeemed without a credential")
				continue
			}
			if c, ok := inBatch[*e.CredentialID]; ok {
				outs[i] = Redeemed{Credential: c, Replayed: true}
			} else {
				replays = append(replays, *e.CredentialID)
			}
			continue
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
			refusals[i] = err
			continue
		}
		if _, dup := inBatch[c.ID]; dup {
			refusals[i] = fmt.Errorf("%w: credential %s", ErrConflict, c.ID)
			continue
		}
		now, reqID := r.Now.UTC(), r.RequestID
		e.State, e.RedeemedAt, e.CredentialID, e.RequestID, e.PublicKeySHA256 = EnrolmentRedeemed, &now, &c.ID, &reqID, c.PublicKeySHA256
		inBatch[c.ID] = c
		outs[i] = Redeemed{Credential: c}
		ins, err := insertCredentialStmt(c)
		if err != nil {
			return nil, nil, err
		}
		// Shared keys are renewed by re-registration (TS-0003 §8.8 key
		// registration; README "Renewal and expiry"): a redemption that
		// records a shared key supersedes the assigned ID's active key of the
		// same usage and targets in this same transaction (revoked, RFC 5280
		// reason 4), so one key per assigned ID, usage and targets is
		// fetchable and the old row stays as history. Placed before the
		// insert, it cannot hit the new key.
		if c.Type == TypePSK {
			sup, err := supersedeKeysStmt(e.AssignedID, c, now)
			if err != nil {
				return nil, nil, err
			}
			writes = append(writes, sup)
		}
		writes = append(writes,
			stmt{`UPDATE enrolments SET state = 'redeemed', redeemed_at = $2, credential_id = $3, request_id = $4,
				public_key_sha256 = $5 WHERE token_hash = $1 AND state = 'issued'`,
				[]any{r.TokenHash, now, c.ID, r.RequestID, c.PublicKeySHA256}, 1},
			ins,
			stmt{`UPDATE devices SET state = 'enrolled', assigned_id = $2, updated_at = $3 WHERE id = $1`,
				[]any{e.DeviceID, e.AssignedID, now}, -1},
			auditStmt(AuditEvent{At: now, Tenant: e.Tenant, Actor: enrolActor(r), Action: "device.enrolled", Subject: e.DeviceID,
				Detail: map[string]any{"credentialId": c.ID, "assignedId": e.AssignedID, "mode": e.Mode}}),
		)
	}
	if len(replays) > 0 {
		recorded := map[string]Credential{}
		if err := queryIn(ctx, q, `SELECT `+credentialColumns+` FROM credentials WHERE id IN `, replays, func(r rows) error {
			c, err := scanCredential(r)
			recorded[c.ID] = c
			return err
		}); err != nil {
			return nil, nil, err
		}
		for i, r := range items {
			if outs[i].Credential.ID != "" || refusals[i] != nil {
				continue
			}
			e := enrolments[string(r.TokenHash)]
			c, ok := recorded[*e.CredentialID]
			if !ok {
				return nil, nil, fmt.Errorf("redeem: credential %s of a redeemed token is missing", *e.CredentialID)
			}
			// Ownership transfer: a retry must not hand out a credential that
			// was revoked since (the device was released, or the credential
			// revoked): the token is as good as cancelled.
			if c.Status == StatusRevoked {
				refusals[i] = fmt.Errorf("%w: the credential it bought (%s) was revoked", ErrTokenCancelled, c.ID)
				continue
			}
			outs[i] = Redeemed{Credential: c, Replayed: true}
		}
	}
	if err := execBatch(ctx, q, writes); err != nil {
		return nil, nil, err
	}
	return outs, refusals, nil
}

// stmt is one statement of a pipelined batch. want, when not -1, is the
// number of rows it must affect; anything else aborts the transaction (a
// token that changed under it must not get a credential).
type stmt struct {
	sql  string
	args []any
	want int64
}

func execBatch(ctx context.Context, q querier, stmts []stmt) error {
	if len(stmts) == 0 {
		return nil
	}
	counts, err := q.execBatch(ctx, stmts)
	if err != nil {
		return err
	}
	for i, s := range stmts {
		if s.want >= 0 && counts[i] != s.want {
			return fmt.Errorf("redeem: statement %d affected %d rows, want %d: a row changed under the transaction", i, counts[i], s.want)
		}
	}
	return nil
}

// queryIn runs prefix || "($1, $2, ...)" over values, in chunks the engines
// accept, calling each for every row.
func queryIn(ctx context.Context, q querier, prefix string, values []any, each func(rows) error) error {
	for _, part := range chunked(values, 500) {
		s := inStmt(prefix, part, -1)
		if err := queryEach(ctx, q, s.sql, s.args, each); err != nil {
			return err
		}
	}
	return nil
}

// queryEach runs sql and calls each for every row it returns.
func queryEach(ctx context.Context, q querier, sql string, args []any, each func(rows) error) error {
	r, err := q.query(ctx, sql, args...)
	if err != nil {
		return err
	}
	defer r.Close()
	for r.Next() {
		if err := each(r); err != nil {
			return err
		}
	}
	return r.Err()
}

// list is a read-only query whose every row scan turns into a T.
func list[T any](ctx context.Context, s *Store, scan func(row) (T, error), sql string, args ...any) ([]T, error) {
	var out []T
	err := s.read(ctx, func(q querier) error {
		out = out[:0]
		return queryEach(ctx, q, sql, args, func(r rows) error {
			v, err := scan(r)
			if err == nil {
				out = append(out, v)
			}
			return err
		})
	})
	return out, err
}

// Enrolments lists a device's enrolments, newest first (the device page's
// history).
func (s *Store) Enrolments(ctx context.Context, deviceID string) ([]Enrolment, error) {
	return list(ctx, s, scanEnrolment, `SELECT `+enrolmentColumns+` FROM enrolments WHERE device_id = $1 ORDER BY created_at DESC`, deviceID)
}

// EnrolmentsOf is Enrolments of one tenant only ("" is every tenant's, for
// an sp-admin): after an ownership transfer the device's new owner, and its
// manufacturer, must not see the previous owner's tokens.
func (s *Store) EnrolmentsOf(ctx context.Context, deviceID, tenant string) ([]Enrolment, error) {
	if tenant == "" {
		return s.Enrolments(ctx, deviceID)
	}
	return list(ctx, s, scanEnrolment, `SELECT `+enrolmentColumns+` FROM enrolments WHERE device_id = $1 AND tenant = $2
		ORDER BY created_at DESC`, deviceID, tenant)
}

// enrolActor names who redeemed a token, for the audit trail.
func enrolActor(r Redemption) string {
	if r.OBFID != "" {
		return "obf:" + r.OBFID
	}
	return "enrollee:" + r.AssignedID
}
