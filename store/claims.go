package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

const claimLocksSQL = `SELECT (SELECT claim_locked_until FROM devices WHERE id = $1),
	(SELECT claim_locked_until FROM stakeholders WHERE id = $2),
	(SELECT claim_failures FROM stakeholders WHERE id = $2)`

// claimLocks reads the claim locks of a device and an account in one round
// trip, each by primary key; a missing row reads as unlocked (as in
// ClaimAttempt).
func claimLocks(ctx context.Context, q querier, deviceID, stakeholderID string) (device, account *time.Time, accountFailures int, err error) {
	var failures *int64
	err = q.queryRow(ctx, claimLocksSQL, deviceID, stakeholderID).Scan(&device, &account, &failures)
	if failures != nil {
		accountFailures = int(*failures)
	}
	return device, account, accountFailures, err
}

func lockedAt(until *time.Time, now time.Time) bool { return until != nil && now.Before(*until) }

// claimSuccessStmt checks, inside a token's transaction, that neither the
// device nor the account is locked, and returns the account's write, if
// any: ClaimAttempt reserves one attempt and ClaimSuccess refunds it, so
// the account's count is unchanged unless that reserved attempt reached
// the limit, which locks the account (and starts its budget again). The
// device's side (its count cleared) is the caller's update of the device.
func claimSuccessStmt(ctx context.Context, q querier, deviceID string, c ClaimCheck) (*stmt, error) {
	devUntil, acctUntil, failures, err := claimLocks(ctx, q, deviceID, c.StakeholderID)
	if err != nil {
		return nil, err
	}
	if lockedAt(devUntil, c.Now) || lockedAt(acctUntil, c.Now) {
		return nil, ErrClaimLocked
	}
	if failures+1 < c.StakeholderMax {
		return nil, nil
	}
	return &stmt{`UPDATE stakeholders SET claim_locked_until = $2, claim_failures = 0 WHERE id = $1`,
		[]any{c.StakeholderID, c.Now.Add(c.LockFor).UTC()}, -1}, nil
}

// ClaimLocked reports whether claim-code attempts on the device or by the
// account are refused now. It is a plain read, for answering a locked
// caller before any code is compared; ClaimFailure and IssueToken decide
// again inside their transactions.
func (s *Store) ClaimLocked(ctx context.Context, deviceID, stakeholderID string, now time.Time) (bool, error) {
	var locked bool
	err := s.read(ctx, func(q querier) error {
		dev, acct, _, err := claimLocks(ctx, q, deviceID, stakeholderID)
		locked = lockedAt(dev, now) || lockedAt(acct, now)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("claim lock: %w", err)
	}
	return locked, nil
}

// ClaimFailure records a wrong claim code against the device and the
// account, with its audit event, in one transaction: the attempt
// ClaimAttempt would have reserved, never refunded. A device or account
// already locked is ErrClaimLocked and nothing is written, so a guess made
// while locked tells its maker nothing about the code, whatever it was.
func (s *Store) ClaimFailure(ctx context.Context, deviceID, stakeholderID string, now time.Time, deviceMax, stakeholderMax int, lockFor time.Duration, audit AuditEvent) error {
	event := auditStmt(audit)
	// Row-guarded (txRowGuarded): it writes both rows it checks, so two
	// failures, or a failure and a token, of one device or one account
	// serialize on that row.
	err := s.txRowGuarded(ctx, "claim_failure", func(q querier) error {
		devUntil, acctUntil, _, err := claimLocks(ctx, q, deviceID, stakeholderID)
		if err != nil {
			return err
		}
		if lockedAt(devUntil, now) || lockedAt(acctUntil, now) {
			return ErrClaimLocked
		}
		until := now.Add(lockFor).UTC()
		_, err = q.execBatch(ctx, []stmt{
			countClaimFailureStmt("devices", deviceID, until, deviceMax),
			countClaimFailureStmt("stakeholders", stakeholderID, until, stakeholderMax),
			event,
		})
		return err
	})
	if err != nil && !errors.Is(err, ErrClaimLocked) {
		return fmt.Errorf("claim failure: %w", err)
	}
	return err
}

// countClaimFailureStmt counts one failure; the one that reaches the limit
// locks and starts a new budget for after the lock. One statement: SET
// expressions read the row as it was (SQL standard; SQLite and PostgreSQL
// alike), so both CASEs see the same old count.
func countClaimFailureStmt(table, id string, until time.Time, limit int) stmt {
	return stmt{`UPDATE ` + table + ` SET
		claim_locked_until = CASE WHEN claim_failures + 1 >= $3 THEN $2 ELSE claim_locked_until END,
		claim_failures = CASE WHEN claim_failures + 1 >= $3 THEN 0 ELSE claim_failures + 1 END
		WHERE id = $1`, []any{id, until, limit}, -1}
}
