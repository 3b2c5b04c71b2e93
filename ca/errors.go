package ca

import (
	"errors"
	"fmt"
)

// Sentinel kinds. Callers branch on these with errors.Is; the wrapping *Error
// carries the human-readable reason.
var (
	// ErrBadCSR: the request is not a well-formed, correctly self-signed
	// PKCS#10 CSR within our size limits. A client error (HTTP 400).
	ErrBadCSR = errors.New("bad certificate signing request")

	// ErrUnsupportedKey: the subject public key is of a type, curve, size or
	// exponent this CA does not certify.
	ErrUnsupportedKey = errors.New("unsupported public key")

	// ErrWeakKey is the subset of ErrUnsupportedKey where the key is of a
	// supported algorithm but too weak (e.g. RSA-1024). It wraps
	// ErrUnsupportedKey so callers that only care about "we will not certify
	// this key" need a single errors.Is check, while those that want to tell
	// a device "regenerate a stronger key" can test for ErrWeakKey.
	ErrWeakKey = fmt.Errorf("weak public key: %w", ErrUnsupportedKey)

	// ErrPolicy: the request is well formed but the profile or the CA's state
	// forbids it (missing or wildcard identifiers, validity beyond the
	// profile, expired issuer, failed pre-issuance lint, ...).
	ErrPolicy = errors.New("certificate policy violation")

	// ErrSignerMismatch: a crypto.Signer's public key differs from the
	// certificate it is meant to sign for.
	ErrSignerMismatch = errors.New("signer does not match certificate")
)

// Error is the error type returned for every refusal the package can
// classify. Kind is one of the sentinels above; Reason says what exactly was
// wrong in words safe to log and to return to a client (it never contains key
// material or CSR attributes such as the challengePassword, which carries the
// enrolment token); Err is the underlying cause, if any.
type Error struct {
	Kind   error
	Reason string
	Err    error
}

func (e *Error) Error() string {
	msg := e.Reason
	if msg == "" && e.Kind != nil {
		msg = e.Kind.Error()
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap exposes both the kind and the cause, so errors.Is works for the
// sentinel and for whatever lower-level error caused the refusal.
func (e *Error) Unwrap() []error {
	errs := make([]error, 0, 2)
	if e.Kind != nil {
		errs = append(errs, e.Kind)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

func newErr(kind error, cause error, format string, args ...any) *Error {
	return &Error{Kind: kind, Reason: fmt.Sprintf(format, args...), Err: cause}
}

// Code is a stable snake_case word for a refusal, for the APIs that report
// it: bad_csr, unsupported_key (weak keys included), policy_refused, or
// csr_refused for another *Error; "" when err is not the CA's refusal.
func Code(err error) string {
	var e *Error
	switch {
	case !errors.As(err, &e):
		return ""
	case errors.Is(err, ErrBadCSR):
		return "bad_csr"
	case errors.Is(err, ErrUnsupportedKey):
		return "unsupported_key"
	case errors.Is(err, ErrPolicy):
		return "policy_refused"
	}
	return "csr_refused"
}
