// Package hsm is credfactory's only door to PKCS#11 hardware: it loads a
// module, logs in to one token, and keeps a bounded pool of sessions that
// every key operation borrows from.
//
// Why not crypto11's pool for the hot path: crypto11 hides its sessions, waits
// without a context, and never evicts a session that the token has
// invalidated, so one "log out from outside" or a token reset would wedge the
// server until a restart. Here the pool is bounded by config, a caller waits
// only as long as its context allows, and a broken session is evicted and the
// pool logs in again. crypto11 still does what it is good at: generating the
// long-lived keys in the init ceremony (see EnsureKeys), with a short-lived
// context of its own before the pool opens the module.
//
// Operations offered (all single-part, so that no session is pinned between
// calls): ECDSA signing as a crypto.Signer (SoftHSM 2.6 has only raw
// CKM_ECDSA, so the caller's digest is signed and the r||s result re-encoded as
// ASN.1), HMAC-SHA256 with a non-extractable generic secret (the KDF master
// key), and AES-256-GCM seal/open with a non-extractable key-encryption key.
// KeysPresent is a readiness check that each key is still on the token.
//
// Config.TestSignLatency holds the session for a fixed time after each
// signature, standing in for a network HSM's round trip when replica
// scaling is measured on one machine. It is refused unless TestLatencyEnv
// names the same duration, so neither a copied config file nor a stray
// variable alone can slow a production HSM.
package hsm
