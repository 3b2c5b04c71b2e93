package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Claim-code throttling (docs/ownership.md): wrong codes slow the
// claimant, never the device. Each claimant (account) has a budget of wrong
// codes across all devices and is locked for a while when it is spent; the
// device keeps a count of wrong codes since its last successful claim, a
// ceiling that never refuses anyone: once a device has seen DeviceMax wrong
// codes, the next wrong code of any claimant locks that claimant at once,
// so each account an attacker holds buys one guess per lock window. A
// claimant that is not locked always has its code compared: the owner's or
// a rightful claimant's correct code goes through while an attacker is held.

const claimStateSQL = `SELECT (SELECT claim_failures FROM devices WHERE id = $1),
	(SELECT claim_locked_until FROM stakeholders WHERE id = $2),
	(SELECT claim_failures FROM stakeholders WHERE id = $2)`

// claimState reads a device's wrong-code count and an account's claim lock
// and count in one round trip, each by primary key; a missing row reads as
// zero and unlocked.
func claimState(ctx context.Context, q querier, deviceID, stakeholderID string) (deviceFailures int, account *time.Time, accountFailures int, err error) {
	var dev, acct *int64
	err = q.queryRow(ctx, claimStateSQL, deviceID, stakeholderID).Scan(&dev, &account, &acct)
	if dev != nil {
		deviceFailures = int(*dev)
	}
	if acct != nil {
		accountFailures = int(*acct)
	}
	return deviceFailures, account, accountFailures, err
}

func lockedAt(until *time.Time, now time.Time) bool { return until != nil && now.Before(*until) }

// claimSuccessStmt checks, inside a token's transaction, that the account
// is not locked, and returns the account's write, if any: a correct code
// is counted like an attempt that is then refunded, so the account's count
// is unchanged unless that attempt reached the limit, which locks the
// account (and starts its budget again). Resetting the count instead would
// let an attacker who knows one code (his own device's) restore his budget
// for guessing others. The device's side (its count cleared) is the
// caller's update of the device.
func claimSuccessStmt(ctx context.Context, q querier, deviceID string, c ClaimCheck) (*stmt, error) {
	_, acctUntil, failures, err := claimState(ctx, q, deviceID, c.StakeholderID)
	if err != nil {
		return nil, err
	}
	if lockedAt(acctUntil, c.Now) {
		return nil, ErrClaimLocked
	}
	if failures+1 < c.StakeholderMax {
		return nil, nil
	}
	return &stmt{`UPDATE stakeholders SET claim_locked_until = $2, claim_failures = 0 WHERE id = $1`,
		[]any{c.StakeholderID, c.Now.Add(c.LockFor).UTC()}, -1}, nil
}

// ClaimLocked reports whether claim-code attempts by the account are
// refused now. It is a plain read, for answering a locked caller before
// any code is compared; ClaimFailure and IssueToken decide again inside
// their transactions. The device is an argument for the callers' sake: no
// device is ever locked for everyone.
func (s *Store) ClaimLocked(ctx context.Context, deviceID, stakeholderID string, now time.Time) (bool, error) {
	var locked bool
	err := s.read(ctx, func(q querier) error {
		_, acct, _, err := claimState(ctx, q, deviceID, stakeholderID)
		locked = lockedAt(acct, now)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("claim lock: %w", err)
	}
	return locked, nil
}

// ClaimFailure records a wrong claim code against the device and the
// account, with its audit event, in one transaction. An account already
// locked is ErrClaimLocked and nothing is written, so a guess made while
// locked tells its maker nothing about the code, whatever it was. The
// account is locked for lockFor at its stakeholderMax-th wrong code, or at
// once when the device has already seen deviceMax wrong codes since its
// last successful claim (the device's ceiling).
func (s *Store) ClaimFailure(ctx context.Context, deviceID, stakeholderID string, now time.Time, deviceMax, stakeholderMax int, lockFor time.Duration, audit AuditEvent) error {
	event := auditStmt(audit)
	// Row-guarded (txRowGuarded): it writes both rows it checks, so two
	// failures, or a failure and a token, of one device or one account
	// serialize on that row.
	err := s.txRowGuarded(ctx, "claim_failure", func(q querier) error {
		devFailures, acctUntil, _, err := claimState(ctx, q, deviceID, stakeholderID)
		if err != nil {
			return err
		}
		if lockedAt(acctUntil, now) {
			return ErrClaimLocked
		}
		until := now.Add(lockFor).UTC()
		account := countClaimFailureStmt(stakeholderID, until, stakeholderMax)
		if devFailures >= deviceMax {
			account = stmt{`UPDATE stakeholders SET claim_locked_until = $2, claim_failures = 0 WHERE id = $1`,
				[]any{stakeholderID, until}, -1}
		}
		_, err = q.execBatch(ctx, []stmt{
			{`UPDATE devices SET claim_failures = claim_failures + 1 WHERE id = $1`, []any{deviceID}, -1},
			account,
			event,
		})
		return err
	})
	if err != nil && !errors.Is(err, ErrClaimLocked) {
		return fmt.Errorf("claim failure: %w", err)
	}
	return err
}

// countClaimFailureStmt counts one failure of an account; the one that
// reaches the limit locks and starts a new budget for after the lock. One
// statement: SET expressions read the row as it was (SQL standard; SQLite
// and PostgreSQL alike), so both CASEs see the same old count.
func countClaimFailureStmt(id string, until time.Time, limit int) stmt {
	return stmt{`UPDATE stakeholders SET
		claim_locked_until = CASE WHEN claim_failures + 1 >= $3 THEN $2 ELSE claim_locked_until END,
		claim_failures = CASE WHEN claim_failures + 1 >= $3 THEN 0 ELSE claim_failures + 1 END
		WHERE id = $1`, []any{id, until, limit}, -1}
}
