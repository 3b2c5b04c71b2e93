package hsm

import (
	"context"
	"errors"
	"fmt"

	"github.com/miekg/pkcs11"
)

// HMACSealed computes HMAC-SHA256(secret, m) for every message, where secret
// is sealed by this key (Seal's output, bound to aad), without the derived
// values being computed outside the HSM: on one pooled session it opens the
// seal (CKM_AES_GCM), imports the secret as a session object (CKO_SECRET_KEY,
// CKK_GENERIC_SECRET, CKA_SIGN only, CKA_SENSITIVE true, CKA_EXTRACTABLE
// false, CKA_TOKEN false), signs each message with CKM_SHA256_HMAC and
// destroys the object. This is how the MAF re-derives TS-0003 §10.3 keys
// from an exporter-mode Ke (docs/onem2m.md "Key hierarchy").
//
// The plaintext secret passes through this process between the decryption
// and the import, and is cleared right after: PKCS#11 has no portable way to
// unwrap an AES-GCM seal straight into a key object (SoftHSM 2.6 unwraps
// with CKM_AES_KEY_WRAP and RSA only, and the KEK is not a wrapping key),
// and a derive mechanism that HMACs with a key object as the PRF key
// (CKM_SP800_108_* and the like) is not in SoftHSM 2.6 either. A failed
// authentication is ErrOpen.
func (k *AEADKey) HMACSealed(ctx context.Context, sealed, aad []byte, msgs [][]byte) ([][]byte, error) {
	if len(sealed) < gcmNonceSize+gcmTagBits/8 {
		return nil, fmt.Errorf("%w: %d bytes is shorter than nonce and tag", ErrOpen, len(sealed))
	}
	nonce, ct := sealed[:gcmNonceSize], sealed[gcmNonceSize:]
	out := make([][]byte, len(msgs))
	err := k.m.single(ctx, "hmac_sealed", k.key, func(s session, kek pkcs11.ObjectHandle) (err error) {
		c := k.m.lib.ctx
		params := pkcs11.NewGCMParams(nonce, aad, gcmTagBits)
		defer params.Free()
		if err := c.DecryptInit(s.h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, params)}, kek); err != nil {
			return err
		}
		secret, err := c.Decrypt(s.h, ct)
		if err != nil {
			// Returned as it is, so the pool first rules out a broken
			// session (which SoftHSM also answers CKR_GENERAL_ERROR).
			return decryptError{err}
		}
		h, err := c.CreateObject(s.h, sessionSecretTemplate(secret))
		clear(secret)
		if err != nil {
			return err
		}
		// The object lives only in this session; destroy it at once so a
		// pooled session does not collect them. A failed destroy fails
		// the call, so the pool probes (and if need be replaces) the
		// session that may still hold it.
		defer func() {
			if derr := c.DestroyObject(s.h, h); derr != nil && err == nil {
				err = fmt.Errorf("destroy the imported secret: %w", derr)
			}
		}()
		return hmacEach(c, s, h, msgs, out)
	})
	var de decryptError
	var p11 pkcs11.Error
	// As in Open: a failed tag is CKR_ENCRYPTED_DATA_INVALID per PKCS#11,
	// CKR_GENERAL_ERROR from SoftHSM 2.6, once the pool has ruled out a
	// broken session.
	if errors.As(err, &de) && errors.As(de.err, &p11) && (p11 == pkcs11.CKR_ENCRYPTED_DATA_INVALID || p11 == pkcs11.CKR_GENERAL_ERROR) {
		return nil, fmt.Errorf("%w: %s", ErrOpen, k.key.ref)
	}
	if err != nil {
		return nil, fmt.Errorf("hsm: HMAC with a secret sealed by %s: %w", k.key.ref, err)
	}
	return out, nil
}

// sessionSecretTemplate is an imported HMAC key that can do nothing but
// sign, and can never be read back or copied to the token.
func sessionSecretTemplate(value []byte) []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_GENERIC_SECRET),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, false),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE, value),
	}
}

// decryptError marks a failure of the decryption step, the only one that
// can mean "does not authenticate".
type decryptError struct{ err error }

func (e decryptError) Error() string { return "decrypt: " + e.err.Error() }
func (e decryptError) Unwrap() error { return e.err }
