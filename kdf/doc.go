// Package kdf is the oneM2M TS-0003 symmetric key hierarchy (TS-0003 §10.3)
// as credfactory runs it.
//
// The MEF provisions shared symmetric keys, and the MAF must later give the
// same key to an authorised Target (RETRIEVE
// /fetchCredentials/<KeID>/<SUID>). The key itself is never written down:
// the MAF stores a [Context] (which enrolment, which kind of key, which
// identifiers, where Ke comes from) and re-derives the key on each
// retrieval.
//
// Ke, the enrolment key, has one of two roots (docs/onem2m.md "Key
// hierarchy"):
//
//   - Exporter mode, TS-0003 §10.3 and the default on the RSPF path: Ke and
//     the RelativeKeID are the RFC 5705 export (label
//     "EXPORTER-oneM2M-Bootstrap", 48 bytes) of the device's TLS session
//     with the MEF ([ExportEnrolmentKey]). Device and MEF each compute it, so
//     no key crosses the wire. The MEF keeps Ke sealed by the HSM's
//     key-encryption key in the Context; to derive, the HSM opens it,
//     imports it as a non-extractable session key and computes Km, Kpsa or
//     Kuc itself ([SealedDeriver]).
//   - Master mode, credfactory's own: Ke = HMAC_HSM(master, label || 0x00 ||
//     KeID) ([EnrolmentKey]), so a KeID alone recovers it and the MEF sends
//     the derived key to the device. Ke is an HMAC output and leaves the HSM
//     anyway, so the second level runs in Go: importing Ke back would only
//     add HSM calls without protecting anything.
//
// Km, Kpsa and Kuc are derived from Ke exactly as TS-0003 §10.3 writes them,
// so a device or Target implementing the standard computes the same bytes;
// Kuc is derived for the Target that asks (its FQDN is hashed), so each
// Target of a key gets its own.
//
// The package also formats and checks the TS-0003 identifiers that name
// these keys (KeID, KpsaID, KmID, Credential-ID, SUID), because the
// derivation inputs and the registry keys must agree byte for byte.
package kdf
