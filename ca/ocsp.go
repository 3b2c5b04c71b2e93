package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	_ "crypto/sha256" // hash algorithms OCSP requests may name
	_ "crypto/sha512"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"time"

	"github.com/credfactory/credfactory/crlreason"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
	"golang.org/x/crypto/ocsp"
)

// OCSP (RFC 6960) for the issuing CA. Requests are parsed and responses
// built here rather than with golang.org/x/crypto/ocsp's ParseRequest and
// CreateResponse, which the tests use to check us: ParseRequest drops the
// request extensions, so the nonce (RFC 8954) is lost, and CreateResponse
// writes ExtraExtensions into singleExtensions, where no client looks for a
// nonce (it belongs in responseExtensions, RFC 6960 §4.4.1), and stamps
// producedAt from the wall clock. The responder signs with the issuing CA
// key itself (RFC 6960 §4.2.2.2 allows the CA; it needs no delegated
// certificate, and the issuing CA certificate has digitalSignature for it).

// The unsigned OCSP error responses (RFC 6960 §4.2.1).
var (
	OCSPMalformedRequest = ocsp.MalformedRequestErrorResponse
	OCSPInternalError    = ocsp.InternalErrorErrorResponse
	OCSPTryLater         = ocsp.TryLaterErrorResponse
	OCSPUnauthorized     = ocsp.UnauthorizedErrorResponse
)

// MaxOCSPRequestSize bounds a request: one CertID, a nonce and an optional
// signature with a few certificates fit in far less.
const MaxOCSPRequestSize = 16 << 10

// ErrMalformedOCSP marks a request the responder answers with
// malformedRequest.
var ErrMalformedOCSP = errors.New("ca: malformed OCSP request")

var (
	oidOCSPNonce = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 2}
	oidOCSPBasic = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 1}
	hashByOID    = map[string]crypto.Hash{
		"1.3.14.3.2.26":          crypto.SHA1,
		"2.16.840.1.101.3.4.2.1": crypto.SHA256,
		"2.16.840.1.101.3.4.2.2": crypto.SHA384,
		"2.16.840.1.101.3.4.2.3": crypto.SHA512,
	}
)

// OCSPRequest is a parsed single-certificate OCSP request.
type OCSPRequest struct {
	// HashAlgorithm hashed IssuerNameHash and IssuerKeyHash; 0 when the
	// request named an algorithm we do not know (it cannot be ours then).
	HashAlgorithm  crypto.Hash
	IssuerNameHash []byte
	IssuerKeyHash  []byte
	Serial         *big.Int
	// Nonce is the nonce extension's extnValue, echoed verbatim; nil when
	// the request has none, or one outside RFC 8954's 1 to 32 octets.
	Nonce []byte
	// certID is the request's CertID element, echoed verbatim so the
	// client matches it whatever encoding of the hash algorithm it used.
	certID []byte
}

// ParseOCSPRequest parses a DER OCSPRequest for exactly one certificate.
// Any error wraps ErrMalformedOCSP. Requests for several certificates are
// refused too: each status is a registry read and an HSM signature, and no
// client we serve batches (OpenSSL asks one certificate per -cert).
func ParseOCSPRequest(der []byte) (*OCSPRequest, error) {
	bad := func(what string) (*OCSPRequest, error) {
		return nil, fmt.Errorf("%w: %s", ErrMalformedOCSP, what)
	}
	if len(der) == 0 || len(der) > MaxOCSPRequestSize {
		return bad(fmt.Sprintf("%d bytes", len(der)))
	}
	in := cryptobyte.String(der)
	var req, tbs cryptobyte.String
	if !in.ReadASN1(&req, cbasn1.SEQUENCE) || !in.Empty() || !req.ReadASN1(&tbs, cbasn1.SEQUENCE) {
		return bad("not an OCSPRequest")
	}
	var version cryptobyte.String
	var hasVersion bool
	if !tbs.ReadOptionalASN1(&version, &hasVersion, cbasn1.Tag(0).Constructed().ContextSpecific()) {
		return bad("version")
	}
	if hasVersion {
		var v int
		if !version.ReadASN1Integer(&v) || v != 0 {
			return bad("version is not v1")
		}
	}
	if !tbs.SkipOptionalASN1(cbasn1.Tag(1).Constructed().ContextSpecific()) { // requestorName
		return bad("requestorName")
	}
	var list cryptobyte.String
	if !tbs.ReadASN1(&list, cbasn1.SEQUENCE) {
		return bad("requestList")
	}
	var one cryptobyte.String
	if !list.ReadASN1(&one, cbasn1.SEQUENCE) {
		return bad("empty requestList")
	}
	if !list.Empty() {
		return bad("more than one certificate in one request")
	}
	r := &OCSPRequest{}
	var certID cryptobyte.String
	if !one.ReadASN1Element(&certID, cbasn1.SEQUENCE) ||
		!one.SkipOptionalASN1(cbasn1.Tag(0).Constructed().ContextSpecific()) || !one.Empty() {
		return bad("Request")
	}
	r.certID = append([]byte(nil), certID...)
	var id, alg cryptobyte.String
	var oid asn1.ObjectIdentifier
	var nameHash, keyHash cryptobyte.String
	r.Serial = new(big.Int)
	if !certID.ReadASN1(&id, cbasn1.SEQUENCE) || !id.ReadASN1(&alg, cbasn1.SEQUENCE) ||
		!alg.ReadASN1ObjectIdentifier(&oid) ||
		!id.ReadASN1(&nameHash, cbasn1.OCTET_STRING) || !id.ReadASN1(&keyHash, cbasn1.OCTET_STRING) ||
		!id.ReadASN1Integer(r.Serial) || !id.Empty() {
		return bad("CertID")
	}
	r.HashAlgorithm = hashByOID[oid.String()]
	r.IssuerNameHash, r.IssuerKeyHash = []byte(nameHash), []byte(keyHash)

	var extsWrap cryptobyte.String
	var hasExts bool
	if !tbs.ReadOptionalASN1(&extsWrap, &hasExts, cbasn1.Tag(2).Constructed().ContextSpecific()) || !tbs.Empty() {
		return bad("requestExtensions")
	}
	if hasExts {
		var exts cryptobyte.String
		if !extsWrap.ReadASN1(&exts, cbasn1.SEQUENCE) || !extsWrap.Empty() {
			return bad("requestExtensions")
		}
		for !exts.Empty() {
			var ext, value cryptobyte.String
			var extOID asn1.ObjectIdentifier
			if !exts.ReadASN1(&ext, cbasn1.SEQUENCE) || !ext.ReadASN1ObjectIdentifier(&extOID) ||
				!ext.SkipOptionalASN1(cbasn1.BOOLEAN) || !ext.ReadASN1(&value, cbasn1.OCTET_STRING) || !ext.Empty() {
				return bad("extension")
			}
			if extOID.Equal(oidOCSPNonce) && nonceLengthOK(value) {
				r.Nonce = append([]byte(nil), value...)
			}
		}
	}
	// The optional signature ([0] of OCSPRequest) is not checked: this
	// responder answers anyone (RFC 6960 §4.1.2: servers MAY require
	// signed requests; status is public information).
	if !req.SkipOptionalASN1(cbasn1.Tag(0).Constructed().ContextSpecific()) || !req.Empty() {
		return bad("optionalSignature")
	}
	return r, nil
}

// nonceLengthOK applies RFC 8954 §2.1: a nonce is 1 to 32 octets; a
// responder MAY leave out nonces outside that range, which keeps an
// attacker from making us sign and echo arbitrary data. The value is an
// OCTET STRING holding the nonce; older clients sent the bare octets.
func nonceLengthOK(value cryptobyte.String) bool {
	inner := value
	var nonce cryptobyte.String
	if inner.ReadASN1(&nonce, cbasn1.OCTET_STRING) && inner.Empty() {
		return len(nonce) >= 1 && len(nonce) <= 32
	}
	return len(value) >= 1 && len(value) <= 32
}

// OCSPStatus is a certificate's status in a response.
type OCSPStatus int

// RFC 6960 §2.2 statuses.
const (
	OCSPGood OCSPStatus = iota
	OCSPRevoked
	OCSPUnknown
)

func (s OCSPStatus) String() string {
	switch s {
	case OCSPGood:
		return "good"
	case OCSPRevoked:
		return "revoked"
	case OCSPUnknown:
		return "unknown"
	}
	return fmt.Sprintf("OCSPStatus(%d)", int(s))
}

// OCSPAnswer is what the responder says about the requested certificate.
type OCSPAnswer struct {
	Status OCSPStatus
	// RevokedAt and Reason (RFC 5280 CRLReason, 0 omits it) for OCSPRevoked.
	RevokedAt time.Time
	Reason    int
	// ThisUpdate is when the status was known correct; NextUpdate, when
	// set, is when newer information will be available.
	ThisUpdate time.Time
	NextUpdate time.Time
}

// IsOurs reports whether the request's CertID names this CA as the issuer
// (RFC 6960 §4.1.1: hashes of the issuer's DN and public key).
func (c *CA) IsOurs(r *OCSPRequest) bool {
	h, ok := c.issuerHashes[r.HashAlgorithm]
	return ok && bytes.Equal(h.name, r.IssuerNameHash) && bytes.Equal(h.key, r.IssuerKeyHash)
}

type issuerHash struct{ name, key []byte }

// ocspIdentity precomputes the issuer's CertID hashes for every algorithm a
// request may use, and the responder key hash (RFC 6960 §4.2.1: SHA-1 of
// the public key BIT STRING).
func ocspIdentity(issuer *x509.Certificate) (map[crypto.Hash]issuerHash, []byte, error) {
	var spki struct {
		Algorithm asn1.RawValue
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(issuer.RawSubjectPublicKeyInfo, &spki); err != nil {
		return nil, nil, fmt.Errorf("issuer public key: %w", err)
	}
	key := spki.PublicKey.RightAlign()
	out := map[crypto.Hash]issuerHash{}
	for _, h := range hashByOID {
		nh, kh := h.New(), h.New()
		nh.Write(issuer.RawSubject)
		kh.Write(key)
		out[h] = issuerHash{name: nh.Sum(nil), key: kh.Sum(nil)}
	}
	keyHash := sha1.Sum(key)
	return out, keyHash[:], nil
}

// SignOCSP builds and signs (with the issuer key, in the HSM) a successful
// basic OCSP response to req. producedAt is now; the nonce, if the request
// had one, is echoed in responseExtensions.
func (c *CA) SignOCSP(ctx context.Context, req *OCSPRequest, a OCSPAnswer) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("ca: sign OCSP response: %w", err)
	}
	hash, sigAlg := c.ocspHash, c.ocspSigAlg
	if c.ocspAlgErr != nil {
		return nil, fmt.Errorf("ca: sign OCSP response: %w", c.ocspAlgErr)
	}
	sec := func(t time.Time) time.Time { return t.UTC().Truncate(time.Second) }
	b := cryptobyte.NewBuilder(nil)
	b.AddASN1(cbasn1.SEQUENCE, func(rd *cryptobyte.Builder) { // ResponseData; version v1 is the default
		rd.AddASN1(cbasn1.Tag(2).Constructed().ContextSpecific(), func(id *cryptobyte.Builder) { // byKey
			id.AddASN1OctetString(c.responderKeyHash)
		})
		rd.AddASN1GeneralizedTime(sec(c.now()))
		rd.AddASN1(cbasn1.SEQUENCE, func(list *cryptobyte.Builder) {
			list.AddASN1(cbasn1.SEQUENCE, func(sr *cryptobyte.Builder) { // SingleResponse
				sr.AddBytes(req.certID)
				switch a.Status {
				case OCSPGood:
					sr.AddASN1(cbasn1.Tag(0).ContextSpecific(), func(*cryptobyte.Builder) {})
				case OCSPRevoked:
					sr.AddASN1(cbasn1.Tag(1).Constructed().ContextSpecific(), func(ri *cryptobyte.Builder) {
						ri.AddASN1GeneralizedTime(sec(a.RevokedAt))
						if a.Reason != crlreason.Unspecified {
							ri.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(r *cryptobyte.Builder) {
								r.AddASN1Enum(int64(a.Reason))
							})
						}
					})
				default:
					sr.AddASN1(cbasn1.Tag(2).ContextSpecific(), func(*cryptobyte.Builder) {})
				}
				sr.AddASN1GeneralizedTime(sec(a.ThisUpdate))
				if !a.NextUpdate.IsZero() {
					sr.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(n *cryptobyte.Builder) {
						n.AddASN1GeneralizedTime(sec(a.NextUpdate))
					})
				}
			})
		})
		if req.Nonce != nil {
			rd.AddASN1(cbasn1.Tag(1).Constructed().ContextSpecific(), func(w *cryptobyte.Builder) {
				w.AddASN1(cbasn1.SEQUENCE, func(exts *cryptobyte.Builder) {
					exts.AddASN1(cbasn1.SEQUENCE, func(ext *cryptobyte.Builder) {
						ext.AddASN1ObjectIdentifier(oidOCSPNonce)
						ext.AddASN1OctetString(req.Nonce)
					})
				})
			})
		}
	})
	tbs, err := b.Bytes()
	if err != nil {
		return nil, fmt.Errorf("ca: encode OCSP response: %w", err)
	}
	digest := hash.New()
	digest.Write(tbs)
	var sig []byte
	err = c.audited(ctx, "OCSP response", func() []slog.Attr {
		return []slog.Attr{slog.String("serial", req.Serial.Text(16)), slog.String("status", a.Status.String()),
			slog.String("tbs_sha256", sha256Hex(tbs))}
	}, func() (_ []slog.Attr, err error) {
		sig, err = c.signer.Sign(rand.Reader, digest.Sum(nil), hash)
		return nil, err
	})
	if err != nil {
		return nil, fmt.Errorf("ca: sign OCSP response: %w", err)
	}
	basic := cryptobyte.NewBuilder(nil)
	basic.AddASN1(cbasn1.SEQUENCE, func(br *cryptobyte.Builder) {
		br.AddBytes(tbs)
		br.AddBytes(sigAlg)
		br.AddASN1BitString(sig)
	})
	basicDER, err := basic.Bytes()
	if err != nil {
		return nil, fmt.Errorf("ca: encode OCSP response: %w", err)
	}
	out := cryptobyte.NewBuilder(nil)
	out.AddASN1(cbasn1.SEQUENCE, func(r *cryptobyte.Builder) {
		r.AddASN1Enum(0) // successful
		r.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(w *cryptobyte.Builder) {
			w.AddASN1(cbasn1.SEQUENCE, func(rb *cryptobyte.Builder) {
				rb.AddASN1ObjectIdentifier(oidOCSPBasic)
				rb.AddASN1OctetString(basicDER)
			})
		})
	})
	der, err := out.Bytes()
	if err != nil {
		return nil, fmt.Errorf("ca: encode OCSP response: %w", err)
	}
	return der, nil
}

// signatureAlgorithm picks the hash and the DER AlgorithmIdentifier the
// issuer key signs with, as x509 does for certificates: ECDSA with the
// curve's matching SHA-2, RSA PKCS #1 v1.5 with SHA-256.
func signatureAlgorithm(pub crypto.PublicKey) (crypto.Hash, []byte, error) {
	var hash crypto.Hash
	var oid asn1.ObjectIdentifier
	withNull := false
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			hash, oid = crypto.SHA256, asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
		case elliptic.P384():
			hash, oid = crypto.SHA384, asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}
		case elliptic.P521():
			hash, oid = crypto.SHA512, asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 4}
		default:
			return 0, nil, errors.New("unsupported ECDSA curve")
		}
	case *rsa.PublicKey:
		hash, oid, withNull = crypto.SHA256, asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}, true
	default:
		return 0, nil, fmt.Errorf("unsupported signer key %T", pub)
	}
	b := cryptobyte.NewBuilder(nil)
	b.AddASN1(cbasn1.SEQUENCE, func(a *cryptobyte.Builder) {
		a.AddASN1ObjectIdentifier(oid)
		if withNull {
			a.AddASN1NULL()
		}
	})
	der, err := b.Bytes()
	return hash, der, err
}

// NewOCSPRequest is the request a relying party sends about leaf: x/crypto's
// ocsp.CreateRequest (CertID hashed with hash) plus, when nonce is not
// empty, the RFC 8954 nonce extension it cannot add. For clients and tests
// of the responder; openssl ocsp sends the same shape.
func NewOCSPRequest(leaf, issuer *x509.Certificate, hash crypto.Hash, nonce []byte) ([]byte, error) {
	plain, err := ocsp.CreateRequest(leaf, issuer, &ocsp.RequestOptions{Hash: hash})
	if err != nil || len(nonce) == 0 {
		return plain, err
	}
	in := cryptobyte.String(plain)
	var req, tbs, list cryptobyte.String
	if !in.ReadASN1(&req, cbasn1.SEQUENCE) || !req.ReadASN1(&tbs, cbasn1.SEQUENCE) || !tbs.ReadASN1Element(&list, cbasn1.SEQUENCE) {
		return nil, errors.New("ca: OCSP request: cannot re-read x/crypto's request")
	}
	b := cryptobyte.NewBuilder(nil)
	b.AddASN1(cbasn1.SEQUENCE, func(r *cryptobyte.Builder) {
		r.AddASN1(cbasn1.SEQUENCE, func(tb *cryptobyte.Builder) {
			tb.AddBytes(list)
			tb.AddASN1(cbasn1.Tag(2).Constructed().ContextSpecific(), func(w *cryptobyte.Builder) {
				w.AddASN1(cbasn1.SEQUENCE, func(exts *cryptobyte.Builder) {
					exts.AddASN1(cbasn1.SEQUENCE, func(e *cryptobyte.Builder) {
						e.AddASN1ObjectIdentifier(oidOCSPNonce)
						e.AddASN1(cbasn1.OCTET_STRING, func(v *cryptobyte.Builder) { v.AddASN1OctetString(nonce) })
					})
				})
			})
		})
	})
	return b.Bytes()
}
