package store

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"time"
)

// The OBF CA's certificates: every certificate the SP issued to an OBF
// (its mTLS client certificate; before the sub-CA mode was retired, an
// OBS's sub-CA) has a row in obf_certificates, so that the OBF CA publishes
// a CRL and answers OCSP for them (package castatus, through
// OBFCertificates) and disabling an OBF revokes them in the same
// transaction. They are not credentials: no device holds them.

// OBF certificate kinds.
const (
	OBFCertClient = "client"
	OBFCertSubCA  = "subca"
)

// obfCertRow is one obf_certificates row, taken from the certificate.
type obfCertRow struct {
	serial, issuerKeyID, kind string
	notAfter                  time.Time
}

func obfCertOf(der []byte, kind string) (obfCertRow, error) {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return obfCertRow{}, fmt.Errorf("OBF %s certificate: %w", kind, err)
	}
	return obfCertRow{serial: c.SerialNumber.Text(16), issuerKeyID: hex.EncodeToString(c.AuthorityKeyId), kind: kind,
		notAfter: c.NotAfter.UTC()}, nil
}

// obfCertRows lists an OBF's certificates.
func obfCertRows(o OBF) ([]obfCertRow, error) {
	var out []obfCertRow
	for _, c := range []struct {
		der  []byte
		kind string
	}{{o.ClientCertDER, OBFCertClient}, {o.SubCADER, OBFCertSubCA}} {
		if len(c.der) == 0 {
			continue
		}
		r, err := obfCertOf(c.der, c.kind)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

func insertOBFCerts(ctx context.Context, q querier, obfID string, rows []obfCertRow, revokedAt *time.Time, reason *int) error {
	status := StatusActive
	if revokedAt != nil {
		status = StatusRevoked
	}
	for _, r := range rows {
		var at *time.Time
		if revokedAt != nil {
			t := revokedAt.UTC()
			at = &t
		}
		if _, err := q.exec(ctx, `INSERT INTO obf_certificates (serial, issuer_key_id, obf_id, kind, not_after, status, revoked_at, revocation_reason)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (serial) DO NOTHING`,
			r.serial, r.issuerKeyID, obfID, r.kind, r.notAfter, status, at, reason); err != nil {
			return err
		}
	}
	return nil
}

// revokeOBFCerts revokes every certificate of an OBF not revoked yet.
func revokeOBFCerts(ctx context.Context, q querier, obfID string, now time.Time, reason int) error {
	_, err := q.exec(ctx, `UPDATE obf_certificates SET status = 'revoked', revoked_at = $2, revocation_reason = $3
		WHERE obf_id = $1 AND status <> 'revoked'`, obfID, now.UTC(), reason)
	return err
}

// backfillOBFCertificates files the certificates of OBFs registered before
// obf_certificates existed. An OBS's sub-CA is filed revoked
// (cessationOfOperation): the mode is retired, and an OBS key that can
// still sign certificates chaining to the SP root is what the OBF CA's CRL
// must rule out. A disabled OBF's client certificate is filed revoked at
// its disabling. Idempotent (ON CONFLICT DO NOTHING).
func backfillOBFCertificates(ctx context.Context, s *Store) error {
	obfs, err := list(ctx, s, scanOBF, `SELECT `+obfColumns+` FROM obfs ORDER BY id`)
	if err != nil {
		return fmt.Errorf("backfill OBF certificates: %w", err)
	}
	now := time.Now()
	retired := 5 // RFC 5280 §5.3.1 cessationOfOperation
	for _, o := range obfs {
		rows, err := obfCertRows(o)
		if err != nil {
			// A registration whose certificate does not parse cannot have
			// been used: record nothing rather than stop the migration.
			continue
		}
		err = s.tx(ctx, "backfill_obf_certificates", func(q querier) error {
			for _, r := range rows {
				var at *time.Time
				var reason *int
				switch {
				case r.kind == OBFCertSubCA:
					at, reason = &now, &retired
				case o.DisabledAt != nil:
					at, reason = o.DisabledAt, &retired
				}
				if err := insertOBFCerts(ctx, q, o.ID, []obfCertRow{r}, at, reason); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("backfill OBF certificates of %s: %w", o.ID, err)
		}
	}
	return nil
}

// OBFCertificates is the registry view the OBF CA's status services read
// (castatus.Registry): obf_certificates instead of credentials.
type OBFCertificates struct{ s *Store }

// OBFCertificates returns that view.
func (s *Store) OBFCertificates() OBFCertificates { return OBFCertificates{s} }

// RevokedCertificates is Store.RevokedCertificates over OBF certificates.
func (v OBFCertificates) RevokedCertificates(ctx context.Context, issuerKeyID string, unexpiredAt time.Time, after string, limit int) ([]RevokedCertificate, error) {
	return revokedPage(ctx, v.s, "obf_certificates", "OBF certificates", issuerKeyID, unexpiredAt, after, limit)
}

// RevocationWatermark is Store.RevocationWatermark over OBF certificates.
func (v OBFCertificates) RevocationWatermark(ctx context.Context, issuerKeyID string, since time.Time) (Watermark, error) {
	w, err := revocationWatermark(ctx, v.s, "obf_certificates", issuerKeyID, since)
	if err != nil {
		return w, fmt.Errorf("OBF revocation watermark of %s: %w", issuerKeyID, err)
	}
	return w, nil
}

// CertificateStatusBySerial is Store.CertificateStatusBySerial over OBF
// certificates (ErrNotFound when no OBF certificate has the serial).
func (v OBFCertificates) CertificateStatusBySerial(ctx context.Context, serial string) (CertificateStatus, error) {
	var cs CertificateStatus
	err := v.s.read(ctx, func(q querier) error {
		return q.queryRow(ctx, `SELECT issuer_key_id, status, revoked_at, revocation_reason, not_after
			FROM obf_certificates WHERE serial = $1`, serial).Scan(&cs.IssuerKeyID, &cs.Status, &cs.RevokedAt, &cs.Reason, &cs.NotAfter)
	})
	if err != nil {
		return cs, fmt.Errorf("OBF certificate status of serial %s: %w", serial, err)
	}
	return cs.inUTC(), nil
}

// NextCRLNumber is Store.NextCRLNumber: CRL numbers are per issuer already.
func (v OBFCertificates) NextCRLNumber(ctx context.Context, issuerKeyID string, atLeast int64) (int64, error) {
	return v.s.NextCRLNumber(ctx, issuerKeyID, atLeast)
}
