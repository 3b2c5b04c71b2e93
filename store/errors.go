package store

import "errors"

// Errors callers decide on. The HTTP layers map them to statuses, except
// ErrUnavailable, which carries its own answer (apierr.Unavailable).
var (
	// ErrNotFound: no such row.
	ErrNotFound = errors.New("store: not found")
	// ErrConflict: a unique key already exists (a Credential-ID, serial,
	// fingerprint or key ID that is already recorded).
	ErrConflict = errors.New("store: already exists")
	// ErrUnavailable: the database cannot be reached or is restarting;
	// nothing was changed by this call, or the change is safe to retry.
	// Wherever it surfaces unmapped, the HTTP layer answers 503
	// registry_unavailable with Retry-After (apierr.Unavailable).
	ErrUnavailable error = &unavailableError{"store: database unavailable"}
	// ErrContention: the transaction kept meeting serialization failures
	// (SQLSTATE 40001) through its whole retry budget while the database
	// answered: concurrent requests, not an outage. Nothing was written;
	// the request may be retried as it is.
	ErrContention = errors.New("store: transaction still conflicting after retries")
	// ErrInvalid: the request itself is malformed (say, a revocation reason
	// RFC 5280 does not define); nothing was written.
	ErrInvalid = errors.New("store: invalid request")

	// ErrTokenUnknown: no enrolment has this token.
	ErrTokenUnknown = errors.New("store: unknown enrolment token")
	// ErrTokenRedeemed: the token was redeemed by another request.
	ErrTokenRedeemed = errors.New("store: enrolment token already redeemed")
	// ErrTokenExpired: the token is past its expiry.
	ErrTokenExpired = errors.New("store: enrolment token expired")
	// ErrTokenCancelled: the token was cancelled (re-requested or released).
	ErrTokenCancelled = errors.New("store: enrolment token cancelled")
	// ErrTokenMismatch: the token is valid but bound to another identity:
	// assigned ID, device certificate, OBF or path.
	ErrTokenMismatch = errors.New("store: enrolment token bound to another identity")
)

// unavailableError is an outage a client should retry after.
type unavailableError struct{ msg string }

func (e *unavailableError) Error() string { return e.msg }

// Unavailable implements apierr.Unavailable without importing it: the store
// knows nothing of HTTP, only what a caller should be told.
func (e *unavailableError) Unavailable() (code, message string) {
	return "registry_unavailable", "the registry database is unavailable; retry"
}
