package hsm

import (
	"context"
	"errors"

	"github.com/miekg/pkcs11"
)

// Errors a caller decides on. ErrUnavailable and ErrPoolTimeout mean retry
// later: they carry the answer (503 hsm_unavailable) that the HTTP layer
// gives wherever one surfaces unmapped (apierr.Unavailable); the rest are
// 500s unless a caller maps them.
var (
	// ErrPoolTimeout: no session became free before the caller's deadline.
	ErrPoolTimeout error = &unavailableError{"hsm: no free session before the deadline"}
	// ErrUnavailable: the token cannot be reached now (removed, not
	// present, module not answering); the pool keeps trying to recover.
	ErrUnavailable error = &unavailableError{"hsm: token unavailable"}
	// ErrLogin: the PIN was refused. The pool never retries a refused PIN,
	// so that it cannot lock the token by itself.
	ErrLogin = errors.New("hsm: login refused")
	// ErrKeyNotFound: no object matches a key URI.
	ErrKeyNotFound = errors.New("hsm: key not found")
	// ErrClosed: the module was closed.
	ErrClosed = errors.New("hsm: closed")

	// errTokenLost: an operation failed and the token itself then failed
	// C_GetTokenInfo. SoftHSM2 reports a token whose storage went away
	// with CKR_GENERAL_ERROR (login, token info) or a handle error and
	// never with CKR_TOKEN_NOT_PRESENT; and it stays broken after the
	// storage is back until C_Finalize/C_Initialize reloads it. So a token
	// that no longer answers is treated like a removed one: re-initialise.
	errTokenLost = errors.New("hsm: the token no longer answers")
)

// unavailableError is an outage a client should retry after.
type unavailableError struct{ msg string }

func (e *unavailableError) Error() string { return e.msg }

// Unavailable implements apierr.Unavailable (without importing it: hsm
// knows nothing of HTTP, only what a caller should be told).
func (e *unavailableError) Unavailable() (code, message string) {
	return "hsm_unavailable", "the HSM is busy or unavailable; retry"
}

// brokenSession reports whether err means the session (or the login behind
// it) is gone, so the operation should be retried on a fresh, logged-in
// session with key handles looked up again.
func brokenSession(err error) bool {
	var p11 pkcs11.Error
	if !errors.As(err, &p11) {
		return false
	}
	switch p11 {
	case pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_SESSION_CLOSED,
		pkcs11.CKR_USER_NOT_LOGGED_IN, pkcs11.CKR_DEVICE_REMOVED,
		pkcs11.CKR_TOKEN_NOT_PRESENT, pkcs11.CKR_DEVICE_ERROR,
		// A logout from outside drops the handles of private objects, so
		// a stale key handle is the same kind of breakage.
		pkcs11.CKR_KEY_HANDLE_INVALID, pkcs11.CKR_OBJECT_HANDLE_INVALID:
		return true
	}
	return false
}

// tokenGone reports whether err means the slot or token itself is gone, so
// the module must be re-initialised, not just a session reopened.
func tokenGone(err error) bool {
	if errors.Is(err, errTokenLost) {
		return true
	}
	var p11 pkcs11.Error
	if !errors.As(err, &p11) {
		return false
	}
	switch p11 {
	case pkcs11.CKR_DEVICE_REMOVED, pkcs11.CKR_TOKEN_NOT_PRESENT,
		pkcs11.CKR_SLOT_ID_INVALID, pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED,
		pkcs11.CKR_TOKEN_NOT_RECOGNIZED:
		return true
	}
	return false
}

// ErrorKind names an error with a bounded set of words, for metric labels.
func ErrorKind(err error) string {
	var p11 pkcs11.Error
	switch {
	case err == nil:
		return "none"
	case errors.Is(err, ErrPoolTimeout):
		return "pool_timeout"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "canceled"
	case errors.Is(err, ErrUnavailable):
		return "unavailable"
	case errors.Is(err, errTokenLost):
		return "token_lost"
	case errors.Is(err, ErrLogin):
		return "login"
	case errors.Is(err, ErrKeyNotFound):
		return "key_not_found"
	case errors.Is(err, ErrClosed):
		return "closed"
	case errors.As(err, &p11):
		if brokenSession(err) {
			return "session_broken"
		}
		return "pkcs11"
	}
	return "other"
}
