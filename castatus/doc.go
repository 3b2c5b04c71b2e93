// Package castatus publishes the SP's CAs' certificate status: a CRL per
// CA at /ca/v1/crl/{issuer}.crl (issuing: devices; obf: OBF client
// certificates; root: the intermediates, signed at the ceremony and served
// as is) and one OCSP responder at /ocsp for the issuing and OBF CAs
// (RFC 5280, RFC 6960; DESIGN.md "Interfaces"). TS-0003 §8.1.2.2 requires
// entities to check a CRL for MEF-issued certificates and lets the SP offer
// OCSP; README "Trust model" says what relying parties check.
//
// Both read the registry (package store: credentials for the issuing CA,
// obf_certificates for the OBF CA), sign with the CA (package ca, its key
// in the HSM) and are served on the TLS listener and on an
// optional plain-HTTP one (ca.status_listen): relying parties fetch CRLs
// and OCSP over HTTP, the answers being signed.
//
// The CRL is regenerated on a schedule and whenever it is stale: a
// revocation in this process says so at once (Service.MarkStale), and a
// revocation on another replica is noticed through the registry's
// revocation watermark, read at most once a second when the CRL is
// fetched. OCSP reads each certificate's status per request, so it never
// answers "good" for a certificate already revoked.
package castatus
