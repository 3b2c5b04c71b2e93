// Package mef is the M2M Enrolment Function: where Enrollees and trusted
// OBFs turn enrolment tokens into SP credentials.
//
// The untrusted path (RSPF) serves EST (RFC 7030) under /.well-known/est/,
// the certificate RSPF of TS-0003 §8.3.6, with the token as the CSR's
// challengePassword, and a JSON twin at /mef/v1/enrol that also provisions
// shared keys from the TS-0003 §10.3 hierarchy: by default in exporter mode,
// Ke taken from the request's own TLS session and never sent, or in the
// project's master mode (docs/onem2m.md "Key hierarchy"). The trusted path takes
// batches from a trusted OBF at /mef/v1/forward (wire contract: package
// forwardapi): the OBF is a registration authority, so the issuing CA
// certifies each forwarded CSR for its token's assigned ID and the MEF
// names each forwarded key (README "Trust model"). profiles.go decides what
// an assigned ID's certificate names (AE-ID or CSE-ID) and which usage
// (SUID 40-43) it is recorded for.
//
// Every credential is recorded in the MAF in the same transaction that
// redeems its token (the registry's group commit) before it is answered, and
// a client that retries with the same token and key (or request ID) gets the
// recorded credential back instead of an error or a second credential.
package mef
