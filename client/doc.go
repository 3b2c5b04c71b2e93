// Package client is the Go client of credfactory's device-facing and
// machine-facing interfaces: an Enrollee enrolling over EST (RFC 7030) or the
// JSON RSPF with the bundle the portal issued, and a trusted OBF forwarding
// credentials. The CLI (credfactory enroll, credfactory obs), the bench suite
// and the tests use it. It depends on the standard library and the PKCS#7
// decoder only, so it can be vendored into device tooling.
package client
