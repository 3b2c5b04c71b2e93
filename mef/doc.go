// Package mef is the M2M Enrolment Function: where Enrollees and trusted
// OBFs turn enrolment tokens into SP credentials.
//
// The untrusted path (RSPF) serves EST (RFC 7030) under /.well-known/est/,
// the certificate RSPF of TS-0003 §8.3.6, with the token as the CSR's
// challengePassword, and a JSON twin at /mef/v1/enrol that also provisions
// shared keys from the TS-0003 §10.3 hierarchy. The trusted path takes
// batches of credentials a trusted OBF provisioned itself at /mef/v1/forward.
//
// Every credential is recorded in the MAF in the same transaction that
// redeems its token (the registry's group commit) before it is answered, and
// a client that retries with the same token and key (or request ID) gets the
// recorded credential back instead of an error or a second credential.
package mef
