package kdf

import (
	"context"
	"crypto/sha256"
	"fmt"
)

// Master is the KDF master key held in the HSM. Implementations compute
// HMAC-SHA256(master, label || 0x00 || context) inside the HSM
// (docs/architecture.md "HSM and keys"); hsm.HMACKey is the production one.
// It is an interface here so that this package, and the MEF and MAF that use
// it, can be tested with a software key and never import the PKCS#11 layer.
type Master interface {
	Derive(ctx context.Context, label string, context []byte) ([]byte, error)
}

// LabelEnrolmentRoot is the HSM label for the per-enrolment root key Ke.
//
// It is credfactory's master mode, not TS-0003's: TS-0003 §10.3 obtains Ke
// from the enrolment TLS session (exporter mode, ExportEnrolmentKey). Master
// mode (docs/onem2m.md "Master mode") has Ke = HMAC_HSM(master, label ||
// 0x00 || KeID) instead, so the KeID alone (stored in a Context) recovers Ke
// and the MEF can hand the derived key to a device that did not enrol over
// its own TLS session (trusted lines, bulk). The words differ from every TS-0003 label so the root
// can never collide with a TS-0003 derivation, and changing them changes
// every derived key: it is part of the stored data format.
const LabelEnrolmentRoot = "credfactory oneM2M Enrolment Key"

// KeySize is the length of every key in the hierarchy: HMAC-SHA-256 output
// (TS-0003 §10.3).
const KeySize = sha256.Size

// EnrolmentKey returns Ke for the enrolment named by keID: master.Derive(ctx,
// LabelEnrolmentRoot, []byte(keID)) (docs/architecture.md "HSM and keys").
//
// keID must be canonical (as produced by KeID): the bytes of the KeID are
// the HSM context, so "ABC@…" and "abc@…" would otherwise name two different
// keys for one enrolment. The caller owns the returned slice and should
// clear it when done.
func EnrolmentKey(ctx context.Context, master Master, keID string) ([]byte, error) {
	if err := checkCanonicalKeID(keID); err != nil {
		return nil, err
	}
	return enrolmentKey(ctx, master, keID)
}

// enrolmentKey is EnrolmentKey for a keID already known to be canonical
// (Context.Derive has validated it).
func enrolmentKey(ctx context.Context, master Master, keID string) ([]byte, error) {
	ke, err := master.Derive(ctx, LabelEnrolmentRoot, []byte(keID))
	if err != nil {
		return nil, fmt.Errorf("kdf: derive enrolment key for %s: %w", keID, err)
	}
	if len(ke) != KeySize {
		// A master that answers with anything but an HMAC-SHA256 is
		// misconfigured (wrong mechanism or key); deriving from it would
		// silently hand out keys nobody else can reproduce.
		clear(ke)
		return nil, fmt.Errorf("kdf: derive enrolment key for %s: master returned %d bytes, want %d", keID, len(ke), KeySize)
	}
	return ke, nil
}
