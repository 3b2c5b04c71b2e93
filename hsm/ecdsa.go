package hsm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
	"time"

	"github.com/miekg/pkcs11"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

var (
	oidP256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}
	oidP384 = asn1.ObjectIdentifier{1, 3, 132, 0, 34}
)

// Signer is an ECDSA private key in the HSM. It implements crypto.Signer; the
// caller hashes (as crypto.Signer callers do) and the HSM signs the digest
// with raw CKM_ECDSA, the only ECDSA mechanism SoftHSM 2.6 has.
type Signer struct {
	m    *Module
	key  *keyHandle
	pub  *ecdsa.PublicKey
	size int // bytes of r and of s
}

// Signer returns the ECDSA key named by uri (type=private). The public key is
// read once and the result cached per URI, so the hot path never looks it up.
func (m *Module) Signer(ctx context.Context, uri string) (*Signer, error) {
	m.keysMu.Lock()
	defer m.keysMu.Unlock()
	if s, ok := m.signers[uri]; ok {
		return s, nil
	}
	k, err := m.newKeyHandle(uri, ClassPrivate)
	if err != nil {
		return nil, err
	}
	var pub *ecdsa.PublicKey
	err = m.do(ctx, "find_key", func(s session) error {
		if _, err := k.handle(m, s); err != nil {
			return err
		}
		ph, err := m.findObject(s, pkcs11.CKO_PUBLIC_KEY, k.ref)
		if err != nil {
			return fmt.Errorf("public half: %w", err)
		}
		pub, err = m.ecPublicKey(s, ph)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("load signer %s: %w", k.ref, err)
	}
	s := &Signer{m: m, key: k, pub: pub, size: (pub.Curve.Params().BitSize + 7) / 8}
	m.signers[uri] = s
	return s, nil
}

func (m *Module) ecPublicKey(s session, h pkcs11.ObjectHandle) (*ecdsa.PublicKey, error) {
	attrs, err := m.lib.ctx.GetAttributeValue(s.h, h, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, nil),
		pkcs11.NewAttribute(pkcs11.CKA_EC_POINT, nil),
	})
	if err != nil {
		return nil, fmt.Errorf("read public key: %w", err)
	}
	var oid asn1.ObjectIdentifier
	if _, err := asn1.Unmarshal(attrs[1].Value, &oid); err != nil {
		return nil, fmt.Errorf("public key: EC params are not a named curve: %w", err)
	}
	var curve elliptic.Curve
	switch {
	case oid.Equal(oidP256):
		curve = elliptic.P256()
	case oid.Equal(oidP384):
		curve = elliptic.P384()
	default:
		return nil, fmt.Errorf("public key: curve %v is not P-256 or P-384", oid)
	}
	// PKCS#11 v2.20+ wraps the point in a DER OCTET STRING; some modules
	// give it bare.
	point := attrs[2].Value
	var inner []byte
	if rest, err := asn1.Unmarshal(point, &inner); err == nil && len(rest) == 0 {
		point = inner
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(curve, point)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	return pub, nil
}

// Public returns the *ecdsa.PublicKey.
func (s *Signer) Public() crypto.PublicKey { return s.pub }

// URI is the key URI the signer was loaded from.
func (s *Signer) URI() string { return s.key.ref.URI }

// Sign signs digest, which the caller hashed with opts.HashFunc(). The wait
// for a session is bounded by hsm.wait_timeout, crypto.Signer having no
// context; SignContext takes one.
func (s *Signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return s.SignContext(context.Background(), digest, opts)
}

// SignContext is Sign with a context that bounds the wait for a session.
func (s *Signer) SignContext(ctx context.Context, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts != nil {
		if h := opts.HashFunc(); h == 0 {
			return nil, errors.New("hsm: ECDSA signs a digest; pass the hash function in opts")
		} else if len(digest) != h.Size() {
			return nil, fmt.Errorf("hsm: digest is %d bytes, %v wants %d", len(digest), h, h.Size())
		}
	}
	var raw []byte
	err := s.m.single(ctx, "ecdsa_sign", s.key, func(ss session, h pkcs11.ObjectHandle) error {
		ctx := s.m.lib.ctx
		if err := ctx.SignInit(ss.h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_ECDSA, nil)}, h); err != nil {
			return err
		}
		var err error
		raw, err = ctx.Sign(ss.h, digest)
		if d := s.m.cfg.TestSignLatency; d > 0 && err == nil {
			time.Sleep(d) // Config.TestSignLatency: a network HSM's round trip, tests only
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("hsm: ECDSA sign with %s: %w", s.key.ref, err)
	}
	if len(raw) != 2*s.size {
		return nil, fmt.Errorf("hsm: ECDSA signature is %d bytes, want %d", len(raw), 2*s.size)
	}
	// PKCS#11 returns r||s; X.509 and TLS want the ASN.1 SEQUENCE.
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1BigInt(new(big.Int).SetBytes(raw[:s.size]))
		b.AddASN1BigInt(new(big.Int).SetBytes(raw[s.size:]))
	})
	return b.Bytes()
}
