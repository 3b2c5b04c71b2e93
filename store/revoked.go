package store

import (
	"context"
	"encoding/asn1"
	"encoding/hex"
	"fmt"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Certificate status for the CA's CRL and OCSP responder (RFC 5280 §5,
// RFC 6960; TS-0003 §8.1.2.2).
//
// Every certificate row records issuer_key_id: the hex keyIdentifier of the
// certificate's own authorityKeyIdentifier, i.e. the issuing CA's subject
// key ID. The CRL and OCSP responder of one CA read only rows of that
// issuer: certificates of the retired OBS sub-CAs were signed by those, and
// listing them on the issuing CA's CRL would be a false statement by it
// (the sub-CAs themselves are revoked on the OBF CA's, obfcerts.go).

// RevokedCertificate is one entry of a CRL.
type RevokedCertificate struct {
	// Serial is the certificate serial as stored: lower-case hex.
	Serial    string
	RevokedAt time.Time
	// Reason is the RFC 5280 CRLReason, nil when none was recorded.
	Reason *int
}

// RevokedCertificates returns up to limit revoked certificates of one
// issuer whose serial sorts after after (keyset paging: pass the last
// serial of the previous page, "" for the first), in serial order.
// Certificates that expired before unexpiredAt are left out, which keeps the
// CRL from growing for ever; RFC 5280 §3.3 allows dropping an entry only
// after it appeared on one scheduled CRL issued beyond the certificate's
// validity, so callers pass a point well before thisUpdate (castatus uses
// thisUpdate - Validity).
//
// Each call is one short read over the credentials_revoked partial index:
// a CRL generation pages through millions of entries without holding a
// transaction or a lock, so enrolments and revocations go on meanwhile.
func (s *Store) RevokedCertificates(ctx context.Context, issuerKeyID string, unexpiredAt time.Time, after string, limit int) ([]RevokedCertificate, error) {
	return revokedPage(ctx, s, "credentials", "certificates", issuerKeyID, unexpiredAt, after, limit)
}

// revokedPage is RevokedCertificates over table, credentials or
// obf_certificates: both keep the same status columns and a partial index
// on (issuer_key_id, serial) WHERE status = 'revoked'. what names the
// table's certificates in errors.
func revokedPage(ctx context.Context, s *Store, table, what, issuerKeyID string, unexpiredAt time.Time, after string, limit int) ([]RevokedCertificate, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("revoked %s: limit must be positive", what)
	}
	out := make([]RevokedCertificate, 0, limit)
	err := s.read(ctx, func(q querier) error {
		out = out[:0]
		return queryEach(ctx, q, `SELECT serial, revoked_at, revocation_reason FROM `+table+`
			WHERE issuer_key_id = $1 AND status = 'revoked' AND serial > $2 AND not_after > $3
			ORDER BY serial LIMIT $4`, []any{issuerKeyID, after, unexpiredAt.UTC(), limit}, func(r rows) error {
			var rc RevokedCertificate
			var at *time.Time
			if err := r.Scan(&rc.Serial, &at, &rc.Reason); err != nil {
				return err
			}
			if at != nil {
				rc.RevokedAt = at.UTC()
			}
			out = append(out, rc)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("revoked %s of %s: %w", what, issuerKeyID, err)
	}
	return out, nil
}

// Watermark summarises one issuer's revocations stamped after a point in
// time: a CRL built when it read one Watermark is stale once the same
// question gets another answer.
type Watermark struct {
	// Latest is the latest revocation time (zero when there is none).
	Latest time.Time
	// Count is how many revocations are stamped after the point.
	Count int64
}

// RevocationWatermark reads the Watermark of one issuer's revocations
// stamped after since. The count, not only the latest time, is what makes
// it sound across replicas: revoked_at is the revoking replica's clock when
// its transaction began, so a slow transaction may commit a revocation
// stamped earlier than one already seen; it still adds one to the count,
// as long as it is stamped after since (the caller sets since back by more
// than any transaction lasts plus clock skew). One range over the
// credentials_revoked_at index, cheap enough to ask on every CRL fetch.
func (s *Store) RevocationWatermark(ctx context.Context, issuerKeyID string, since time.Time) (Watermark, error) {
	w, err := revocationWatermark(ctx, s, "credentials", issuerKeyID, since)
	if err != nil {
		return w, fmt.Errorf("revocation watermark of %s: %w", issuerKeyID, err)
	}
	return w, nil
}

// revocationWatermark is RevocationWatermark over table (see revokedPage).
func revocationWatermark(ctx context.Context, s *Store, table, issuerKeyID string, since time.Time) (Watermark, error) {
	var w Watermark
	var at *time.Time
	err := s.read(ctx, func(q querier) error {
		return q.queryRow(ctx, `SELECT MAX(revoked_at), COUNT(*) FROM `+table+`
			WHERE issuer_key_id = $1 AND status = 'revoked' AND revoked_at > $2`,
			issuerKeyID, since.UTC()).Scan(&at, &w.Count)
	})
	if err != nil {
		return w, err
	}
	if at != nil {
		w.Latest = at.UTC()
	}
	return w, nil
}

// CertificateStatus is what an OCSP responder needs about one serial.
type CertificateStatus struct {
	// IssuerKeyID is the issuer that signed this serial (hex subject key ID);
	// empty when the certificate names none.
	IssuerKeyID string
	Status      string
	RevokedAt   *time.Time
	Reason      *int
	NotAfter    time.Time
}

// CertificateStatusBySerial reads one certificate's status (ErrNotFound if
// no credential has that serial). It reads the registry on every call, so a
// revocation committed anywhere is visible to the next OCSP request.
func (s *Store) CertificateStatusBySerial(ctx context.Context, serial string) (CertificateStatus, error) {
	var cs CertificateStatus
	err := s.read(ctx, func(q querier) error {
		var issuer *string
		if err := q.queryRow(ctx, `SELECT issuer_key_id, status, revoked_at, revocation_reason, not_after
			FROM credentials WHERE serial = $1 AND type = 'x509'`, serial).Scan(&issuer, &cs.Status, &cs.RevokedAt, &cs.Reason, &cs.NotAfter); err != nil {
			return err
		}
		if issuer != nil {
			cs.IssuerKeyID = *issuer
		}
		return nil
	})
	if err != nil {
		return cs, fmt.Errorf("certificate status of serial %s: %w", serial, err)
	}
	return cs.inUTC(), nil
}

// inUTC returns cs with its times in UTC, as every reader of the registry
// hands them out whatever zone the driver scanned them in.
func (cs CertificateStatus) inUTC() CertificateStatus {
	cs.NotAfter = cs.NotAfter.UTC()
	if cs.RevokedAt != nil {
		t := cs.RevokedAt.UTC()
		cs.RevokedAt = &t
	}
	return cs
}

// issuerKeyIDOf is the issuer_key_id a credential row records: taken from
// the certificate itself rather than from the caller, so that every path
// that stores a certificate (RSPF, re-enrolment, OBS forwarding, and those
// still to come) files it under the CA that really signed it.
func issuerKeyIDOf(c Credential) *string {
	if c.Type != TypeX509 || len(c.CertDER) == 0 {
		return nil
	}
	kid := AuthorityKeyID(c.CertDER)
	if len(kid) == 0 {
		return nil
	}
	s := hex.EncodeToString(kid)
	return &s
}

var oidAuthorityKeyID = asn1.ObjectIdentifier{2, 5, 29, 35}

// AuthorityKeyID returns the keyIdentifier of a DER certificate's
// authorityKeyIdentifier extension (RFC 5280 §4.2.1.1), or nil if it has
// none or does not parse. It walks the DER to that one extension instead
// of calling x509.ParseCertificate, which would also decode and validate
// the public key and every other extension on each enrolment's insert.
func AuthorityKeyID(der []byte) []byte {
	in := cryptobyte.String(der)
	var cert, tbs cryptobyte.String
	if !in.ReadASN1(&cert, cbasn1.SEQUENCE) || !cert.ReadASN1(&tbs, cbasn1.SEQUENCE) {
		return nil
	}
	if !tbs.SkipOptionalASN1(cbasn1.Tag(0).Constructed().ContextSpecific()) || // version
		!tbs.SkipASN1(cbasn1.INTEGER) || // serialNumber
		!tbs.SkipASN1(cbasn1.SEQUENCE) || // signature
		!tbs.SkipASN1(cbasn1.SEQUENCE) || // issuer
		!tbs.SkipASN1(cbasn1.SEQUENCE) || // validity
		!tbs.SkipASN1(cbasn1.SEQUENCE) || // subject
		!tbs.SkipASN1(cbasn1.SEQUENCE) || // subjectPublicKeyInfo
		!tbs.SkipOptionalASN1(cbasn1.Tag(1).ContextSpecific()) || // issuerUniqueID
		!tbs.SkipOptionalASN1(cbasn1.Tag(2).ContextSpecific()) { // subjectUniqueID
		return nil
	}
	var wrapped, exts cryptobyte.String
	var present bool
	if !tbs.ReadOptionalASN1(&wrapped, &present, cbasn1.Tag(3).Constructed().ContextSpecific()) || !present ||
		!wrapped.ReadASN1(&exts, cbasn1.SEQUENCE) {
		return nil
	}
	for !exts.Empty() {
		var ext cryptobyte.String
		var oid asn1.ObjectIdentifier
		if !exts.ReadASN1(&ext, cbasn1.SEQUENCE) || !ext.ReadASN1ObjectIdentifier(&oid) {
			return nil
		}
		if !oid.Equal(oidAuthorityKeyID) {
			continue
		}
		var value, aki, kid cryptobyte.String
		var hasKID bool
		if !ext.SkipOptionalASN1(cbasn1.BOOLEAN) || !ext.ReadASN1(&value, cbasn1.OCTET_STRING) ||
			!value.ReadASN1(&aki, cbasn1.SEQUENCE) ||
			!aki.ReadOptionalASN1(&kid, &hasKID, cbasn1.Tag(0).ContextSpecific()) || !hasKID {
			return nil
		}
		return append([]byte(nil), kid...)
	}
	return nil
}

// backfillIssuerKeyIDs fills issuer_key_id for certificates stored before
// migration 2, in short pages keyed by ID so a large registry is never held
// in one transaction. Rows whose certificate names no issuer key stay NULL
// (and are on no CRL), and paging past them still ends.
func backfillIssuerKeyIDs(ctx context.Context, s *Store) error {
	const page = 500
	after := ""
	for {
		type item struct {
			id  string
			der []byte
		}
		var items []item
		err := s.read(ctx, func(q querier) error {
			items = items[:0]
			return queryEach(ctx, q, `SELECT id, cert_der FROM credentials
				WHERE type = 'x509' AND issuer_key_id IS NULL AND id > $1 ORDER BY id LIMIT $2`, []any{after, page},
				func(r rows) error {
					var it item
					if err := r.Scan(&it.id, &it.der); err != nil {
						return err
					}
					items = append(items, it)
					return nil
				})
		})
		if err != nil {
			return fmt.Errorf("backfill issuer key IDs: %w", err)
		}
		if len(items) == 0 {
			return nil
		}
		var writes []stmt
		for _, it := range items {
			// A certificate that names no issuer key gets "": it matches no
			// issuer, as NULL did, and leaves the work list, so the sweep's
			// look at it stays one index probe instead of re-reading it.
			kid := ""
			if k := issuerKeyIDOf(Credential{Type: TypeX509, CertDER: it.der}); k != nil {
				kid = *k
			}
			writes = append(writes, stmt{`UPDATE credentials SET issuer_key_id = $2 WHERE id = $1`, []any{it.id, kid}, -1})
		}
		if len(writes) > 0 {
			if err := s.tx(ctx, "migrate", func(q querier) error {
				_, err := q.execBatch(ctx, writes)
				return err
			}); err != nil {
				return fmt.Errorf("backfill issuer key IDs: %w", err)
			}
		}
		after = items[len(items)-1].id
	}
}

// NextCRLNumber reserves the CRL number of the issuer's next CRL: atLeast
// (the caller's time-based number) or, when a CRL with that number or a
// higher one was already published (another replica's clock is ahead, or
// this one stepped back), one more than the highest. One short statement in
// a serializable transaction, so concurrent generations on any replica get
// distinct, increasing numbers. INT8 holds nanoseconds since 1970 until
// 2262.
func (s *Store) NextCRLNumber(ctx context.Context, issuerKeyID string, atLeast int64) (int64, error) {
	var n int64
	err := s.tx(ctx, "crl_number", func(q querier) error {
		return q.queryRow(ctx, `INSERT INTO crl_numbers (issuer_key_id, number) VALUES ($1, $2)
			ON CONFLICT (issuer_key_id) DO UPDATE SET number = CASE
				WHEN crl_numbers.number >= excluded.number THEN crl_numbers.number + 1 ELSE excluded.number END
			RETURNING number`, issuerKeyID, atLeast).Scan(&n)
	})
	if err != nil {
		return 0, fmt.Errorf("next CRL number of %s: %w", issuerKeyID, err)
	}
	return n, nil
}
