// Package client is the Go client of credfactory's device-facing and
// machine-facing interfaces: an Enrollee enrolling over EST (RFC 7030) or the
// JSON RSPF with the bundle the portal issued, and a trusted OBF forwarding
// credentials. For an exporter-mode shared key (TS-0003 §10.3) it is the
// device's half of the derivation: it takes the RFC 5705 export of its own
// TLS session and derives the keys with package kdf. The CLI (credfactory
// enroll, credfactory obs), the bench suite and the tests use it. It
// depends on the standard library, the PKCS#7 decoder and kdf (itself only
// golang.org/x/text), so it can be vendored into device tooling.
package client
