package hsm

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"

	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"
)

// KeyType is what EnsureKeys generates when a key is missing.
type KeyType int

// Key types the factory keeps in the HSM (docs/architecture.md "HSM and keys").
const (
	KeyECDSAP256 KeyType = iota + 1 // CA and TLS keys (default)
	KeyECDSAP384                    // CA keys, when configured
	KeyHMAC                         // KDF master key: generic secret for CKM_SHA256_HMAC
	KeyAES256                       // key-encryption key for AES-GCM
)

func (t KeyType) String() string {
	switch t {
	case KeyECDSAP256:
		return "ECDSA P-256"
	case KeyECDSAP384:
		return "ECDSA P-384"
	case KeyHMAC:
		return "HMAC-SHA256 generic secret"
	case KeyAES256:
		return "AES-256"
	}
	return fmt.Sprintf("KeyType(%d)", int(t))
}

// KeySpec names a key the ceremony needs and its type.
type KeySpec struct {
	URI  string
	Type KeyType
}

// EnsureKeys finds each key in specs and generates the missing ones,
// non-extractable and sensitive, through crypto11. It returns the URIs it
// generated. It opens and closes its own crypto11 context, so it must run
// while no Module is open on the same library (PKCS#11 allows one
// C_Initialize per process): the init ceremony calls it before Open.
func EnsureKeys(cfg Config, specs []KeySpec) (created []string, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("hsm config: %w", err)
	}
	pin, err := cfg.PIN()
	if err != nil {
		return nil, err
	}
	if err := cfg.exportSoftHSMConf(); err != nil {
		return nil, err
	}
	c11, err := crypto11.Configure(&crypto11.Config{
		Path:        cfg.Module,
		TokenLabel:  cfg.TokenLabel,
		TokenSerial: cfg.TokenSerial,
		Pin:         pin,
		MaxSessions: 2, // crypto11 keeps one of them for its login
	})
	if err != nil {
		return nil, fmt.Errorf("open HSM for key generation: %w", scrub(err, pin))
	}
	defer func() {
		if cerr := c11.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("close HSM after key generation: %w", cerr)
		}
	}()
	for _, spec := range specs {
		made, err := ensureKey(c11, spec)
		if err != nil {
			return created, fmt.Errorf("key %s: %w", spec.URI, err)
		}
		if made {
			created = append(created, spec.URI)
		}
	}
	return created, nil
}

func ensureKey(c11 *crypto11.Context, spec KeySpec) (bool, error) {
	ref, err := ParseKeyURI(spec.URI)
	if err != nil {
		return false, err
	}
	var label []byte
	if ref.Label != "" {
		label = []byte(ref.Label)
	}
	switch spec.Type {
	case KeyECDSAP256, KeyECDSAP384:
		if ref.Class != ClassPrivate {
			return false, fmt.Errorf("%v wants type=private", spec.Type)
		}
		curve := elliptic.P256()
		if spec.Type == KeyECDSAP384 {
			curve = elliptic.P384()
		}
		// FindKeyPairs, not FindKeyPair: the latter reports a missing key
		// only as an untyped error string.
		found, err := c11.FindKeyPairs(ref.ID, label)
		if err != nil {
			return false, fmt.Errorf("find: %w", err)
		}
		if len(found) > 1 {
			return false, fmt.Errorf("%d key pairs match; add id= to the URI", len(found))
		}
		if len(found) == 1 {
			pub, ok := found[0].Public().(*ecdsa.PublicKey)
			if !ok || pub.Curve != curve {
				return false, fmt.Errorf("exists but is not %v", spec.Type)
			}
			return false, nil
		}
		pubAttrs, privAttrs, err := pairAttributes(ref.ID, label)
		if err != nil {
			return false, err
		}
		if _, err := c11.GenerateECDSAKeyPairWithAttributes(pubAttrs, privAttrs, curve); err != nil {
			return false, fmt.Errorf("generate %v: %w", spec.Type, err)
		}
		return true, nil
	case KeyHMAC, KeyAES256:
		if ref.Class != ClassSecret {
			return false, fmt.Errorf("%v wants type=secret-key", spec.Type)
		}
		found, err := c11.FindKeys(ref.ID, label)
		if err != nil {
			return false, fmt.Errorf("find: %w", err)
		}
		if len(found) > 1 {
			return false, fmt.Errorf("%d keys match; add id= to the URI", len(found))
		}
		if len(found) == 1 {
			return false, nil
		}
		id, err := keyID(ref.ID)
		if err != nil {
			return false, err
		}
		tmpl, err := crypto11.NewAttributeSetWithIDAndLabel(id, label)
		if err != nil {
			return false, err
		}
		cipher := crypto11.CipherAES
		if spec.Type == KeyHMAC {
			// crypto11's CipherHMACSHA256 generation fails on SoftHSM with
			// CKR_MECHANISM_INVALID (docs/architecture.md "HSM and keys"): a
			// generic secret signs with CKM_SHA256_HMAC just the same.
			cipher = crypto11.CipherGeneric
			_ = tmpl.Set(pkcs11.CKA_SIGN, true)
			_ = tmpl.Set(pkcs11.CKA_VERIFY, true)
			_ = tmpl.Set(pkcs11.CKA_ENCRYPT, false)
			_ = tmpl.Set(pkcs11.CKA_DECRYPT, false)
		} else {
			_ = tmpl.Set(pkcs11.CKA_SIGN, false)
			_ = tmpl.Set(pkcs11.CKA_VERIFY, false)
		}
		_ = tmpl.Set(pkcs11.CKA_PRIVATE, true)
		_ = tmpl.Set(pkcs11.CKA_SENSITIVE, true)
		_ = tmpl.Set(pkcs11.CKA_EXTRACTABLE, false)
		_ = tmpl.Set(pkcs11.CKA_WRAP, false)
		_ = tmpl.Set(pkcs11.CKA_UNWRAP, false)
		_ = tmpl.Set(pkcs11.CKA_DERIVE, false)
		if _, err := c11.GenerateSecretKeyWithAttributes(tmpl, 256, cipher); err != nil {
			return false, fmt.Errorf("generate %v: %w", spec.Type, err)
		}
		return true, nil
	}
	return false, fmt.Errorf("unknown key type %v", spec.Type)
}

// pairAttributes gives both halves the same ID and label, so the public
// half is found from the private key's URI; the private half is sensitive,
// non-extractable and private.
func pairAttributes(id, label []byte) (pub, priv crypto11.AttributeSet, err error) {
	id, err = keyID(id)
	if err != nil {
		return nil, nil, err
	}
	if pub, err = crypto11.NewAttributeSetWithIDAndLabel(id, label); err != nil {
		return nil, nil, err
	}
	if priv, err = crypto11.NewAttributeSetWithIDAndLabel(id, label); err != nil {
		return nil, nil, err
	}
	_ = priv.Set(pkcs11.CKA_PRIVATE, true)
	_ = priv.Set(pkcs11.CKA_SENSITIVE, true)
	_ = priv.Set(pkcs11.CKA_EXTRACTABLE, false)
	_ = priv.Set(pkcs11.CKA_SIGN, true)
	// Signing keys do nothing else: SoftHSM would otherwise default
	// decrypt and unwrap on, and encrypt and wrap on the public half.
	_ = priv.Set(pkcs11.CKA_DERIVE, false)
	_ = priv.Set(pkcs11.CKA_DECRYPT, false)
	_ = priv.Set(pkcs11.CKA_UNWRAP, false)
	_ = pub.Set(pkcs11.CKA_ENCRYPT, false)
	_ = pub.Set(pkcs11.CKA_WRAP, false)
	return pub, priv, nil
}

// keyID returns id, or a random 16-byte CKA_ID when the URI named the key by
// label only (crypto11 pairs the halves by ID).
func keyID(id []byte) ([]byte, error) {
	if len(id) > 0 {
		return id, nil
	}
	id = make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return nil, fmt.Errorf("key id: %w", err)
	}
	return id, nil
}

// scrub makes sure no error string carries the PIN, whatever a library put
// in it.
func scrub(err error, pin string) error {
	if err == nil || pin == "" {
		return err
	}
	if msg := err.Error(); strings.Contains(msg, pin) {
		return errors.New(strings.ReplaceAll(msg, pin, "<pin>"))
	}
	return err
}
