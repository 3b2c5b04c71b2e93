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
package maf
