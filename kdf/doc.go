// Package kdf is the oneM2M TS-0003 symmetric key hierarchy (TS-0003 §10.3)
// as credfactory runs it.
//
// The MEF hands out shared symmetric keys, and the MAF must later give the
// same key to an authorised Target (RETRIEVE
// /fetchCredentials/<KeID>/<SUID>). Storing those keys would put every device
// secret in the database; instead the only secret is a master key that never
// leaves the HSM (docs/architecture.md "HSM and keys"). From it the HSM
// derives a per-enrolment root key Ke, and from Ke this package derives Km,
// Kpsa and Kuc exactly as TS-0003 §10.3 writes them, so that a device or
// Target implementing the standard computes the same bytes. The MAF therefore
// stores a [Context] (which enrolment, which kind of key, which identifiers)
// and re-derives the key on each retrieval; the key itself is never written
// down.
//
// The second-level derivations run in Go rather than in the HSM: Ke leaves
// the HSM anyway (it is the output of a CKM_SHA256_HMAC C_Sign), so
// importing it back as a key object would only add HSM calls, which are
// the factory's throughput ceiling, without protecting anything. One HSM
// call per retrieval (for Ke) is the cost that matters; the Go HMACs are
// small next to it (see BenchmarkContextDerive).
//
// The package also formats and checks the TS-0003 identifiers that name
// these keys (KeID, KpsaID, KmID, Credential-ID, SUID), because the
// derivation inputs and the registry keys must agree byte for byte.
package kdf
