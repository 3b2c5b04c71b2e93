package hsm

import (
	"context"
	"fmt"

	"github.com/miekg/pkcs11"
)

// HMACKey is a non-extractable generic secret in the HSM used with
// CKM_SHA256_HMAC: the KDF master key. Each call is a single-part
// C_SignInit/C_Sign, unlike crypto11's streaming HMAC, which pins a session
// for the life of the hash and panics on errors.
type HMACKey struct {
	m   *Module
	key *keyHandle
}

// HMACKey returns the secret key named by uri (type=secret-key). The lookup
// is cached per epoch; an absent key is reported at the first use, which
// callers make at start-up.
func (m *Module) HMACKey(uri string) (*HMACKey, error) {
	k, err := m.newKeyHandle(uri, ClassSecret)
	if err != nil {
		return nil, err
	}
	return &HMACKey{m: m, key: k}, nil
}

// Sum returns HMAC-SHA256(key, data), computed in the HSM.
func (k *HMACKey) Sum(ctx context.Context, data []byte) ([]byte, error) {
	var mac []byte
	err := k.m.single(ctx, "hmac_sha256", k.key, func(s session, h pkcs11.ObjectHandle) error {
		c := k.m.lib.ctx
		if err := c.SignInit(s.h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_SHA256_HMAC, nil)}, h); err != nil {
			return err
		}
		var err error
		mac, err = c.Sign(s.h, data)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("hsm: HMAC with %s: %w", k.key.ref, err)
	}
	return mac, nil
}

// Derive returns K = HMAC-SHA256(master, label || 0x00 || context), the
// per-enrolment root key of docs/architecture.md "HSM and keys" (Ke =
// HMAC_HSM(master, label || 0x00 || KeID); TS-0003 §10.3 derives the rest).
// The 0x00 separator keeps a label from running into its context.
func (k *HMACKey) Derive(ctx context.Context, label string, context []byte) ([]byte, error) {
	msg := make([]byte, 0, len(label)+1+len(context))
	msg = append(msg, label...)
	msg = append(msg, 0)
	msg = append(msg, context...)
	return k.Sum(ctx, msg)
}
