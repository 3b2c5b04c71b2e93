// Package ca is credfactory's certificate authority: it turns an enrolment
// decision (a PKCS#10 CSR plus what the SP has assigned to the device) into a
// certificate, and it holds the one-off ceremony helpers that create the root
// and issuing CA certificates.
//
// The package deliberately knows nothing about where keys live. Every signing
// operation goes through a crypto.Signer, so production runs on a PKCS#11 key
// (see the hsm package, which this package must never import) while the tests
// run the very same code on software keys.
//
// Two rules shape the API:
//
//   - The profile, not the CSR, decides what a certificate says. A CSR only
//     contributes its public key (after its self-signature has been checked);
//     subject, SANs, key usage, extended key usage, validity and CA-ness come
//     from the Profile and the Request the enrolment logic builds. A device
//     that asks for extra names or CA:true simply does not get them.
//   - A certificate never outlives its issuer, and nothing is issued by an
//     issuer whose key does not match its certificate (checked in New, so a
//     wrong HSM key URI fails at start-up rather than on the first enrolment).
//
// The oneM2M profiles (TS-0003 §10.1.1) are ProfileDevice for AE-IDs,
// ProfileCSE for CSE-IDs and ProfileNodeID for Node-IDs, the last signed
// by a CA of its own (CreateNodeCA; docs/onem2m.md "Certificate names"); an
// enrolment's KeyPolicy narrows which subject keys a CSR may carry
// (ParseCSRFor).
//
// Failures that a client caused are reported as *Error values whose Kind is
// one of the sentinels (ErrBadCSR, ErrUnsupportedKey, ErrWeakKey, ErrPolicy,
// ErrSignerMismatch), so the front end can map them to HTTP statuses with
// errors.Is while logs keep a precise reason.
package ca
