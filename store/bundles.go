package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// ErrBatchMismatch: a chunk of this batch was committed before with other
// rows (or other request parameters): the batch ID was reused for another
// request, and nothing of this chunk is written.
var ErrBatchMismatch = errors.New("store: this batch ID was already used for other rows")

// BulkChunk is one grouped commit of a bulk bundle request: up to a few
// thousand devices whose tokens are recorded in one transaction.
type BulkChunk struct {
	// BatchKey names the batch (a SHA-256 of the caller and its batch ID);
	// Index numbers the chunk within it, from 0.
	BatchKey []byte
	Index    int
	// Fingerprint is a SHA-256 over the request's parameters and every row
	// of this chunk, as received: a retry must send the same.
	Fingerprint   []byte
	StakeholderID string
	// Actor names the caller in the audit trail.
	Actor string
	Now   time.Time
	// The claim-code limits (see ClaimAttempt).
	ClaimMaxFailures, ClaimMaxFailuresAccount int
	ClaimLockout                              time.Duration
	Items                                     []BulkItem
}

// BulkItem is one device of a chunk.
type BulkItem struct {
	DeviceID string
	// TokenHash is the SHA-256 of the token this row gets. Tokens of a
	// batch are derived from the batch, so a retry computes the same hash
	// and finds the token it asked for before instead of making another.
	TokenHash []byte
}

// BulkDecision is the caller's verdict on one item, given the device as
// the transaction reads it.
type BulkDecision struct {
	// Enrolment is what to record when Err is nil. Its TokenHash, DeviceID
	// and CreatedAt are the item's and the chunk's.
	Enrolment Enrolment
	// ClaimAttempt: the proof was a claim code, so the claim limits apply:
	// a locked device or account refuses the item (ErrClaimLocked) whatever
	// the code; a wrong code (Err set) counts against both.
	ClaimAttempt bool
	// NonceHash: the proof was a nonce signature; the device's nonce must
	// be this one and live, and is consumed with the token.
	NonceHash []byte
	// Audit is the detail of the item's device.token_issued event.
	Audit map[string]any
	Err   error
}

// BulkOutcome is what became of one item.
type BulkOutcome struct {
	Enrolment Enrolment
	// Replayed: the batch had recorded this token before (a retry); it is
	// still open and is answered again, nothing new was written.
	Replayed bool
	Err      error
}

// ErrNonceMismatch: the nonce is unknown, used or expired.
var ErrNonceMismatch = errors.New("store: the nonce is unknown, used or expired")

// BulkChunkFingerprint returns the fingerprint a chunk of a batch was
// committed with, or ok false if it was not. It lets the caller see a replay
// before charging rate limits for it; IssueBulk checks it again.
func (s *Store) BulkChunkFingerprint(ctx context.Context, batchKey []byte, index int) (fp []byte, ok bool, err error) {
	err = s.read(ctx, func(q querier) error {
		return q.queryRow(ctx, `SELECT rows_sha256 FROM bulk_chunks WHERE batch_key = $1 AND chunk = $2`, batchKey, index).Scan(&fp)
	})
	if errors.Is(err, ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("bulk chunk: %w", err)
	}
	return fp, true, nil
}

// IssueBulk records the tokens of one chunk in one transaction, with a
// fixed number of statements whatever the chunk's size: it reads the chunk's
// devices, earlier tokens and the caller's claim limits, asks decide about
// each item in order (decide may be called again if the transaction is
// retried), and writes every granted token, device update and audit event
// in multi-row statements. A refused item writes nothing but its claim
// failure; the others go on. err is a failure of the whole chunk (nothing
// written): the database, or ErrBatchMismatch.
//
// An item whose token hash is already recorded is not decided again: an
// open token is answered as a replay, any other state with its error
// (ErrTokenRedeemed, ErrTokenCancelled, ErrTokenExpired), so a retry never
// leaves a second live token behind.
func (s *Store) IssueBulk(ctx context.Context, c BulkChunk, decide func(i int, d *Device) BulkDecision) ([]BulkOutcome, error) {
	if len(c.BatchKey) != 32 || len(c.Fingerprint) != 32 || c.StakeholderID == "" {
		return nil, errors.New("issue bulk: batch key, fingerprint and stakeholder are required")
	}
	var outs []BulkOutcome
	err := s.tx(ctx, "issue_bulk", func(q querier) error {
		var err error
		outs, err = issueBulk(ctx, q, c, decide)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("issue bulk: %w", err)
	}
	s.obs.ObserveBatch(len(c.Items))
	return outs, nil
}

func issueBulk(ctx context.Context, q querier, c BulkChunk, decide func(i int, d *Device) BulkDecision) ([]BulkOutcome, error) {
	now := c.Now.UTC()
	outs := make([]BulkOutcome, len(c.Items))
	var recorded []byte
	err := q.queryRow(ctx, `SELECT rows_sha256 FROM bulk_chunks WHERE batch_key = $1 AND chunk = $2`, c.BatchKey, c.Index).Scan(&recorded)
	switch {
	case errors.Is(err, ErrNotFound):
		recorded = nil
	case err != nil:
		return nil, err
	case !bytes.Equal(recorded, c.Fingerprint):
		return nil, ErrBatchMismatch
	}

	hashes := make([]any, 0, len(c.Items))
	ids := make([]any, 0, len(c.Items))
	for _, it := range c.Items {
		hashes = append(hashes, it.TokenHash)
		ids = append(ids, it.DeviceID)
	}
	// A batch's tokens are recorded only with its chunks, and a device is
	// in one chunk of a request (the caller drops repeats), so only a chunk
	// recorded before (a retry) can find its tokens: a fresh chunk skips
	// the thousand random reads. Should another attempt of the batch with
	// other chunking have recorded one of its tokens meanwhile, the token's
	// primary key refuses the chunk (a conflict, retried as serializable on
	// PostgreSQL), so a token is never recorded twice.
	earlier := map[string]Enrolment{}
	if recorded != nil {
		if err := queryIn(ctx, q, `SELECT `+enrolmentColumns+` FROM enrolments WHERE token_hash IN `, hashes, func(r rows) error {
			e, err := scanEnrolment(r)
			earlier[string(e.TokenHash)] = e
			return err
		}); err != nil {
			return nil, err
		}
	}
	devices := map[string]*Device{}
	if err := queryIn(ctx, q, `SELECT `+deviceColumns+` FROM devices WHERE id IN `, ids, func(r rows) error {
		d, err := scanDevice(r)
		devices[d.ID] = &d
		return err
	}); err != nil {
		return nil, err
	}
	// The caller's live nonces for the chunk's devices (claim_nonces is
	// per claimant: another claimant's nonce proves nothing for this one).
	nonces := map[string][][]byte{}
	if err := queryIn(ctx, q, `SELECT device_id, nonce_hash, stakeholder_id, expires_at FROM claim_nonces WHERE device_id IN `,
		ids, func(r rows) error {
			var id, who string
			var h []byte
			var expires time.Time
			if err := r.Scan(&id, &h, &who, &expires); err != nil {
				return err
			}
			if who == c.StakeholderID && now.Before(expires) {
				nonces[id] = append(nonces[id], h)
			}
			return nil
		}); err != nil {
		return nil, err
	}
	var accountFailures int
	var accountLocked *time.Time
	if err := q.queryRow(ctx, `SELECT claim_failures, claim_locked_until FROM stakeholders WHERE id = $1`, c.StakeholderID).
		Scan(&accountFailures, &accountLocked); err != nil {
		return nil, fmt.Errorf("caller: %w", err)
	}
	accountChanged := false

	var (
		granted      []Enrolment
		devUpdates   []deviceChange
		claimOK      []any // devices whose claim code was right: failures reset
		claimFailed  []any // devices whose claim code was wrong
		noncesTaken  []any
		audits       []AuditEvent
		decidedTwice = map[string]bool{}
	)
	for i, it := range c.Items {
		if e, ok := earlier[string(it.TokenHash)]; ok {
			outs[i] = replayOutcome(e, c.StakeholderID, now)
			continue
		}
		if decidedTwice[it.DeviceID] {
			// The caller drops duplicates before they get here; a second
			// token for one device in one chunk would cancel the first.
			outs[i] = BulkOutcome{Err: fmt.Errorf("%w: device %s twice in one chunk", ErrInvalid, it.DeviceID)}
			continue
		}
		decidedTwice[it.DeviceID] = true
		d := devices[it.DeviceID]
		dec := decide(i, d)
		if dec.ClaimAttempt && d != nil {
			// The account's lock only: a device is never locked for
			// everyone (store/claims.go); past its ceiling a wrong code
			// locks the account at once.
			if accountLocked != nil && now.Before(*accountLocked) {
				outs[i] = BulkOutcome{Err: ErrClaimLocked}
				continue
			}
			if dec.Err != nil {
				claimFailed = append(claimFailed, d.ID)
				accountChanged = true
				if accountFailures+1 >= c.ClaimMaxFailuresAccount || d.ClaimFailures >= c.ClaimMaxFailures {
					until := now.Add(c.ClaimLockout)
					accountLocked, accountFailures = &until, 0
				} else {
					accountFailures++
				}
				audits = append(audits, AuditEvent{At: now, Tenant: d.Tenant, Actor: c.Actor, Action: "device.claim_failure", Subject: d.ID, Detail: map[string]any{}})
			} else {
				claimOK = append(claimOK, d.ID)
			}
		}
		if dec.Err != nil {
			outs[i] = BulkOutcome{Err: dec.Err}
			continue
		}
		if d == nil {
			outs[i] = BulkOutcome{Err: ErrNotFound}
			continue
		}
		if dec.NonceHash != nil {
			if !slices.ContainsFunc(nonces[d.ID], func(h []byte) bool { return bytes.Equal(h, dec.NonceHash) }) {
				outs[i] = BulkOutcome{Err: ErrNonceMismatch}
				continue
			}
			noncesTaken = append(noncesTaken, dec.NonceHash)
		}
		e := dec.Enrolment
		e.TokenHash, e.DeviceID, e.CreatedAt, e.State = it.TokenHash, d.ID, now, EnrolmentIssued
		if e.AssignedID == "" || e.Tenant == "" || (e.Mode != ModeTrusted && e.Mode != ModeUntrusted) || e.Mode == ModeTrusted && e.OBFID == nil {
			return nil, fmt.Errorf("item %d: incomplete enrolment", i)
		}
		ch := deviceChange{id: d.ID, assignedID: e.AssignedID, tenant: e.Tenant, owner: d.OwnerID, state: DeviceTokenIssued,
			wasPreEnrolled: d.State == DevicePreEnrolled}
		if e.Tenant != d.Tenant {
			ch.owner = &e.Tenant // a claim: the device moves, owned
		}
		if d.State == DeviceEnrolled {
			ch.state = d.State
		}
		devUpdates = append(devUpdates, ch)
		granted = append(granted, e)
		audits = append(audits, AuditEvent{At: now, Tenant: e.Tenant, Actor: c.Actor, Action: "device.token_issued", Subject: d.ID, Detail: dec.Audit})
		outs[i] = BulkOutcome{Enrolment: e}
	}

	var writes []stmt
	// A device's open token is cancelled before the new one goes in. Only
	// a device past pre-enrolled can hold one: a token moves it to
	// token-issued (or leaves it enrolled), and a release cancels its
	// tokens as it returns it to pre-enrolled. One statement per device,
	// pipelined: with a list of devices PostgreSQL's planner picks the
	// partial index of every open token in the registry and filters it.
	for _, ch := range devUpdates {
		if ch.wasPreEnrolled {
			continue
		}
		writes = append(writes, stmt{cancelOpenTokensSQL, []any{ch.id}, -1})
	}
	for _, part := range chunked(devUpdates, 400) {
		writes = append(writes, deviceChangesStmt(part, now))
	}
	for _, part := range chunked(claimOK, 500) {
		writes = append(writes, inStmt(`UPDATE devices SET claim_failures = 0, claim_locked_until = NULL WHERE id IN `, part, -1))
	}
	for _, part := range chunked(claimFailed, 500) {
		writes = append(writes, inStmt(`UPDATE devices SET claim_failures = claim_failures + 1 WHERE id IN `, part, int64(len(part))))
	}
	if accountChanged {
		writes = append(writes, stmt{`UPDATE stakeholders SET claim_failures = $2, claim_locked_until = $3 WHERE id = $1`,
			[]any{c.StakeholderID, accountFailures, accountLocked}, 1})
	}
	for _, part := range chunked(noncesTaken, 500) {
		writes = append(writes, inStmt(`DELETE FROM claim_nonces WHERE nonce_hash IN `, part, int64(len(part))))
	}
	for start := 0; start < len(granted); start += 400 {
		writes = append(writes, enrolmentsStmt(granted[start:min(start+400, len(granted))]))
	}
	// The chunk's audit events get adjacent IDs: one random prefix per
	// chunk (so chunks still spread over CockroachDB ranges) and the
	// event's place in it, so the thousand inserts fill a few B-tree pages
	// instead of touching a thousand random ones.
	prefix := uuid.NewString()[:24]
	for i := range audits {
		audits[i].ID = fmt.Sprintf("%s%012x", prefix, i)
	}
	for start := 0; start < len(audits); start += 500 {
		s, err := auditsStmt(audits[start:min(start+500, len(audits))])
		if err != nil {
			return nil, err
		}
		writes = append(writes, s)
	}
	if recorded == nil {
		writes = append(writes, stmt{`INSERT INTO bulk_chunks (batch_key, chunk, rows_sha256, created_at) VALUES ($1, $2, $3, $4)`,
			[]any{c.BatchKey, c.Index, c.Fingerprint, now}, 1})
	}
	if err := execBatch(ctx, q, writes); err != nil {
		return nil, err
	}
	return outs, nil
}

// replayOutcome answers an item whose token the batch recorded before.
func replayOutcome(e Enrolment, stakeholderID string, now time.Time) BulkOutcome {
	switch {
	case e.StakeholderID != stakeholderID:
		// A token hash is derived from the caller's batch: another caller's
		// cannot match. Refuse rather than answer someone else's token.
		return BulkOutcome{Err: fmt.Errorf("%w: token of another stakeholder", ErrConflict)}
	case e.State == EnrolmentIssued && now.Before(e.ExpiresAt):
		return BulkOutcome{Enrolment: e, Replayed: true}
	case e.State == EnrolmentIssued, e.State == EnrolmentExpired:
		return BulkOutcome{Err: ErrTokenExpired}
	case e.State == EnrolmentRedeemed:
		return BulkOutcome{Err: ErrTokenRedeemed}
	}
	return BulkOutcome{Err: ErrTokenCancelled}
}

// deviceChange is one device's new token-holding state.
type deviceChange struct {
	id, assignedID, tenant, state string
	owner                         *string
	wasPreEnrolled                bool
}

// deviceChangesStmt updates many devices in one statement from a VALUES
// list (UPDATE ... FROM, which SQLite, PostgreSQL and CockroachDB share;
// the VALUES columns are column1... on all three). The rows were read in
// this transaction, so the values are computed from them in Go.
func deviceChangesStmt(part []deviceChange, now time.Time) stmt {
	var b strings.Builder
	b.WriteString(`UPDATE devices SET assigned_id = v.column2, tenant = v.column3, owner_id = v.column4, state = v.column5,
		released_at = NULL, updated_at = $1 FROM (VALUES `)
	args := make([]any, 0, 1+5*len(part))
	args = append(args, now)
	for i, ch := range part {
		if i > 0 {
			b.WriteString(", ")
		}
		n := len(args)
		fmt.Fprintf(&b, "($%d, $%d, $%d, $%d, $%d)", n+1, n+2, n+3, n+4, n+5)
		args = append(args, ch.id, ch.assignedID, ch.tenant, ch.owner, ch.state)
	}
	b.WriteString(`) AS v WHERE devices.id = v.column1`)
	return stmt{b.String(), args, int64(len(part))}
}

// enrolmentsStmt inserts issued tokens in one multi-row INSERT.
func enrolmentsStmt(es []Enrolment) stmt {
	var b strings.Builder
	b.WriteString(`INSERT INTO enrolments (` + enrolmentColumns + `) VALUES `)
	args := make([]any, 0, 11*len(es))
	for i, e := range es {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('(')
		for j := 1; j <= 11; j++ {
			b.WriteString("$" + strconv.Itoa(len(args)+j) + ", ")
		}
		b.WriteString("NULL, NULL, NULL, NULL)")
		args = append(args, e.TokenHash, e.DeviceID, e.AssignedID, e.StakeholderID, e.Tenant, e.OBFID, e.Mode,
			e.DeviceCertSHA256, e.ExpiresAt.UTC(), e.State, e.CreatedAt.UTC())
	}
	return stmt{b.String(), args, int64(len(es))}
}

// auditsStmt inserts audit events in one multi-row INSERT.
func auditsStmt(es []AuditEvent) (stmt, error) {
	var b strings.Builder
	b.WriteString(`INSERT INTO audit_events (id, at, tenant, actor, action, subject, detail) VALUES `)
	args := make([]any, 0, 7*len(es))
	for i, e := range es {
		one := auditStmt(e)
		if i > 0 {
			b.WriteString(", ")
		}
		n := len(args)
		fmt.Fprintf(&b, "($%d, $%d, $%d, $%d, $%d, $%d, $%d)", n+1, n+2, n+3, n+4, n+5, n+6, n+7)
		args = append(args, one.args...)
	}
	return stmt{b.String(), args, int64(len(es))}, nil
}

// inStmt is sql || "($1, ...)" over values.
func inStmt(sql string, values []any, want int64) stmt {
	var b strings.Builder
	b.WriteString(sql)
	b.WriteByte('(')
	for i := range values {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("$" + strconv.Itoa(i+1))
	}
	b.WriteByte(')')
	return stmt{b.String(), values, want}
}

// chunked splits values into runs of at most n, each one statement's
// worth of parameters.
func chunked[T any](values []T, n int) [][]T {
	var out [][]T
	for start := 0; start < len(values); start += n {
		out = append(out, values[start:min(start+n, len(values))])
	}
	return out
}
