// Package castatus publishes the issuing CA's certificate status: the CRL
// at /ca/v1/crl/{issuer}.crl and the OCSP responder at /ocsp (RFC 5280,
// RFC 6960; api/openapi.yaml). TS-0003 §8.1.2.2 requires entities to
// check a CRL for MEF-issued certificates and lets the SP offer OCSP.
//
// Both read the registry (package store), sign with the CA (package ca, the
// issuing key in the HSM) and are served on the TLS listener and on an
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
