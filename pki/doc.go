// Package pki sets up and opens credfactory's key material. Init is the
// ceremony `credfactory init` runs: the embedded SoftHSM2 token, the keys in
// the HSM (CA, TLS, KDF master, KEK), the root and issuing CA certificates,
// the server's TLS certificate and trust-anchor.pem. Open is what `serve`
// does with them: load each key once, check it against its certificate, and
// hand out a ready CA, TLS identity and symmetric keys.
//
// It is the one place that joins hsm/ and ca/, which know nothing of each
// other: ca/ signs with any crypto.Signer.
package pki
