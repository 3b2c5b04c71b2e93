package apierr

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// Error is an HTTP-facing error: a status, a stable code and a message.
type Error struct {
	Status  int
	Code    string
	Message string
	// RetryAfter, in seconds, is sent as Retry-After (on 429, 503, and 409
	// registry_contention).
	RetryAfter int
	// Err is the cause, for logs; it is never sent to the client.
	Err error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return e.Code + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// New makes an Error.
func New(status int, code, message string) *Error {
	return &Error{Status: status, Code: code, Message: message}
}

// Common errors.
var (
	NotFound         = New(http.StatusNotFound, "not_found", "no such resource")
	MethodNotAllowed = New(http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed on this resource")
	BodyTooLarge     = New(http.StatusRequestEntityTooLarge, "body_too_large", "request body exceeds the server's limit")
	BadRequest       = New(http.StatusBadRequest, "bad_request", "the request could not be parsed")
)

// Unavailable is implemented by errors that mean a dependency is down for
// now (the HSM: see hsm.ErrUnavailable). As answers them 503 with their
// code and a Retry-After, so that a handler that does not map them itself
// still tells the client to retry instead of answering 500 for an outage.
// A package implements it without importing apierr.
type Unavailable interface {
	error
	Unavailable() (code, message string)
}

// As returns err as an *Error, mapping an Unavailable to a 503 and anything
// else to a 500 that keeps the cause for the log but tells the client
// nothing about internals.
func As(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var u Unavailable
	if errors.As(err, &u) {
		code, msg := u.Unavailable()
		return &Error{Status: http.StatusServiceUnavailable, Code: code, Message: msg, RetryAfter: 1, Err: err}
	}
	return &Error{Status: http.StatusInternalServerError, Code: "internal", Message: "internal error", Err: err}
}

type body struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// JSON is the response body for e.
func (e *Error) JSON() []byte {
	var b body
	b.Error.Code, b.Error.Message = e.Code, e.Message
	out, _ := json.Marshal(b) // two strings: cannot fail
	return out
}
