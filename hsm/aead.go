package hsm

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/miekg/pkcs11"
)

const (
	gcmNonceSize = 12
	gcmTagBits   = 128
)

// ErrOpen: sealed data failed authentication (wrong key, wrong associated
// data, or tampering).
var ErrOpen = errors.New("hsm: sealed data failed authentication")

// AEADKey is a non-extractable AES-256 key-encryption key used with
// CKM_AES_GCM, single-part. Secrets the registry must keep (keys a trusted
// OBF forwarded) are sealed with it before they touch the database.
type AEADKey struct {
	m   *Module
	key *keyHandle
}

// AEADKey returns the AES key named by uri (type=secret-key).
func (m *Module) AEADKey(uri string) (*AEADKey, error) {
	k, err := m.newKeyHandle(uri, ClassSecret)
	if err != nil {
		return nil, err
	}
	return &AEADKey{m: m, key: k}, nil
}

// Seal encrypts plaintext bound to aad and returns nonce || ciphertext || tag.
// The 96-bit nonce is random from Go's CSPRNG (SoftHSM does not generate GCM
// IVs). A retry after a broken session reuses it with the same key,
// plaintext and aad, which reveals nothing.
func (k *AEADKey) Seal(ctx context.Context, plaintext, aad []byte) ([]byte, error) {
	nonce := make([]byte, gcmNonceSize)
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("hsm: GCM nonce: %w", err)
	}
	var ct, used []byte
	err := k.m.single(ctx, "aes_gcm_seal", k.key, func(s session, h pkcs11.ObjectHandle) error {
		params := pkcs11.NewGCMParams(nonce, aad, gcmTagBits)
		defer params.Free()
		c := k.m.lib.ctx
		if err := c.EncryptInit(s.h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, params)}, h); err != nil {
			return err
		}
		var err error
		if ct, err = c.Encrypt(s.h, plaintext); err != nil {
			return err
		}
		// Some HSMs (FIPS mode) replace the caller's IV with their own;
		// the one to store is the one the HSM used.
		used = params.IV()
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("hsm: seal with %s: %w", k.key.ref, err)
	}
	if len(used) == gcmNonceSize {
		nonce = used
	} else if len(used) != 0 {
		return nil, fmt.Errorf("hsm: seal with %s: the HSM used a %d-byte IV, want %d", k.key.ref, len(used), gcmNonceSize)
	}
	return append(nonce, ct...), nil
}

// Open reverses Seal. A failed authentication is ErrOpen.
func (k *AEADKey) Open(ctx context.Context, sealed, aad []byte) ([]byte, error) {
	if len(sealed) < gcmNonceSize+gcmTagBits/8 {
		return nil, fmt.Errorf("%w: %d bytes is shorter than nonce and tag", ErrOpen, len(sealed))
	}
	nonce, ct := sealed[:gcmNonceSize], sealed[gcmNonceSize:]
	var pt []byte
	err := k.m.single(ctx, "aes_gcm_open", k.key, func(s session, h pkcs11.ObjectHandle) error {
		params := pkcs11.NewGCMParams(nonce, aad, gcmTagBits)
		defer params.Free()
		c := k.m.lib.ctx
		if err := c.DecryptInit(s.h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, params)}, h); err != nil {
			return err
		}
		var err error
		pt, err = c.Decrypt(s.h, ct)
		return err
	})
	var p11 pkcs11.Error
	// A failed tag check is CKR_ENCRYPTED_DATA_INVALID per PKCS#11, but
	// SoftHSM 2.6 answers CKR_GENERAL_ERROR. By now the pool has probed the
	// session and ruled out a broken one, so either means the data did not
	// authenticate.
	if errors.As(err, &p11) && (p11 == pkcs11.CKR_ENCRYPTED_DATA_INVALID || p11 == pkcs11.CKR_GENERAL_ERROR) {
		return nil, fmt.Errorf("%w: %s", ErrOpen, k.key.ref)
	}
	if err != nil {
		return nil, fmt.Errorf("hsm: open with %s: %w", k.key.ref, err)
	}
	return pt, nil
}
