package kdf

import "errors"

// Sentinel errors a caller branches on (for instance to answer 400 rather
// than 500). Every error returned by this package that is caused by bad
// input wraps one of them; errors from the Master are wrapped as they are.
var (
	// ErrBadID reports an identifier (KeID, KpsaID, KmID, FQDN,
	// Credential-ID, SUID) that is malformed or not in canonical form.
	ErrBadID = errors.New("kdf: bad identifier")

	// ErrBadContext reports a stored derivation context that cannot be used:
	// malformed JSON, unknown fields, unknown kind or version, missing or
	// misplaced identifiers.
	ErrBadContext = errors.New("kdf: bad derivation context")
)
