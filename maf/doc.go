// Package maf is the M2M Authentication Function: the registry of assigned
// IDs and their credentials (TS-0003 §8.8), and its API for MAF clients.
//
// It registers credentials, retrieves them by assigned ID, Credential-ID, key
// ID, certificate serial or fingerprint, revokes and deregisters them, and
// answers key retrieval (/fetchCredentials/<KeID>/<SUID>) for authorised
// Targets. A shared key is never stored usable: a key the MEF derived is
// re-derived in the HSM from its stored context (package kdf); a key a
// trusted OBF forwarded is stored sealed by the HSM's key-encryption key and
// opened in the HSM only to answer its Target.
//
// Stakeholders register MAF clients (CSEs, Enrolment Targets) under the
// adminFQDNs their tenant owns, and registered clients register symmetric
// keys for Targets (TS-0003 §8.8; docs/maf.md). A client authenticates with
// its TLS certificate or with a symmetric key presented inside TLS: its
// registration's key (kept as a SHA-256 only) or a device's Km (re-derived
// to compare), since Go's TLS has no PSK.
package maf
