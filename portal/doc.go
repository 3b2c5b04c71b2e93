// Package portal is the SP Portal: where Enrolling Stakeholders log in,
// manufacturers pre-enrol devices in bulk, a stakeholder proves control of a
// device and receives its enrolment bundle (token, assigned ID and, for an
// untrusted OBF, the MEF's URI and trust anchor) or many at once (bulk.go:
// streamed in and out a thousand rows at a time, idempotent per batch ID),
// and sp-admins register
// on-boarding functions. Every action is a JSON API under /api/v1/ (API keys
// for machines, the session cookie plus a CSRF token for browsers) and a
// server-rendered page.
//
// Each stakeholder is a tenant: every query is scoped to the caller's tenant
// and a device of another tenant answers as if it did not exist. Secrets are
// stored as hashes only: passwords (argon2id), session IDs, API keys and
// tokens (SHA-256: they are 256-bit random, or for a bulk batch an HMAC with
// a key the HSM derives for the batch), and claim codes, which are short
// and printed on labels, with an HMAC keyed in the HSM so a stolen database
// cannot be searched for them offline.
package portal
