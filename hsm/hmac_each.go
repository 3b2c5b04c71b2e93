package hsm

import (
	"context"
	"fmt"

	"github.com/miekg/pkcs11"
)

// SumEach returns HMAC-SHA256(key, m) for every message, computed in the
// HSM back to back on one pooled session: one session checkout and one key
// lookup for the lot instead of one per message, for callers that hash
// many values at once (a bulk request's claim codes). Each MAC is still a
// single-part C_SignInit/C_Sign, which every PKCS#11 module supports.
func (k *HMACKey) SumEach(ctx context.Context, msgs [][]byte) ([][]byte, error) {
	out := make([][]byte, len(msgs))
	if len(msgs) == 0 {
		return out, nil
	}
	err := k.m.single(ctx, "hmac_sha256_each", k.key, func(s session, h pkcs11.ObjectHandle) error {
		return hmacEach(k.m.lib.ctx, s, h, msgs, out)
	})
	if err != nil {
		return nil, fmt.Errorf("hsm: HMAC of %d messages with %s: %w", len(msgs), k.key.ref, err)
	}
	return out, nil
}

// hmacEach puts the HMAC-SHA-256 of each of msgs under key h into out, on
// one session: one SignInit and Sign per message.
func hmacEach(c *pkcs11.Ctx, s session, h pkcs11.ObjectHandle, msgs [][]byte, out [][]byte) error {
	mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_SHA256_HMAC, nil)}
	for i, m := range msgs {
		if err := c.SignInit(s.h, mech, h); err != nil {
			return err
		}
		mac, err := c.Sign(s.h, m)
		if err != nil {
			return err
		}
		out[i] = mac
	}
	return nil
}
