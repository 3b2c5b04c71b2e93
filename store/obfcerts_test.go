package store

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/credfactory/credfactory/crlreason"
)

// obfCertsFixture is an OBF CA and certificates it issued, in software.
type obfCertsFixture struct {
	caCert      *x509.Certificate
	caKey       *ecdsa.PrivateKey
	issuerKeyID string
}

func newOBFCertsFixture(t *testing.T) *obfCertsFixture {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "OBF CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, SubjectKeyId: []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10},
		NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(1000 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &obfCertsFixture{caCert: c, caKey: key, issuerKeyID: hex.EncodeToString(c.SubjectKeyId)}
}

func (f *obfCertsFixture) issue(t *testing.T, isCA bool) (der []byte, serial string) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 100))
	tmpl := &x509.Certificate{SerialNumber: n, Subject: pkix.Name{CommonName: "obf"}, IsCA: isCA, BasicConstraintsValid: true,
		NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(500 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, f.caCert, &key.PublicKey, f.caKey)
	if err != nil {
		t.Fatal(err)
	}
	return der, n.Text(16)
}

// TestOBFCertificates: a registered OBF's certificate is on file, active;
// disabling the OBF revokes it in the same transaction (once, however
// often it is disabled), and the OBF CA's CRL view and OCSP lookup see it;
// the migration files OBFs registered before: their sub-CAs revoked, a
// disabled OBF's client certificate revoked at its disabling.
func TestOBFCertificates(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		ctx := context.Background()
		f := newOBFCertsFixture(t)
		v := s.OBFCertificates()
		der, serial := f.issue(t, false)
		o := OBF{ID: "obf-1", StakeholderID: "tenant-1", Name: "line", Kind: OBS, Trusted: true, ClientCertSHA256: randomBytes(32),
			ClientCertDER: der, CreatedAt: t0}
		if err := s.CreateOBF(ctx, o, "admin"); err != nil {
			t.Fatal(err)
		}
		if cs, err := v.CertificateStatusBySerial(ctx, serial); err != nil || cs.Status != StatusActive || cs.IssuerKeyID != f.issuerKeyID || cs.RevokedAt != nil {
			t.Fatalf("registered: %+v %v", cs, err)
		}
		if _, err := v.CertificateStatusBySerial(ctx, "abcdef"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unknown serial: %v", err)
		}
		if err := s.CreateOBF(ctx, OBF{ID: "obf-bad", StakeholderID: "tenant-1", Name: "x", Kind: OBS, ClientCertDER: []byte("junk"), CreatedAt: t0}, "admin"); err == nil {
			t.Fatal("an OBF with an unparsable certificate was registered")
		}
		if _, err := s.OBFBy(ctx, "id", "obf-bad"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("half-registered OBF: %v", err)
		}

		at := t0.Add(time.Hour)
		for range 2 {
			if err := s.DisableOBF(ctx, o.ID, "admin", at, crlreason.CessationOfOperation); err != nil {
				t.Fatal(err)
			}
			at = at.Add(time.Hour)
		}
		cs, err := v.CertificateStatusBySerial(ctx, serial)
		if err != nil || cs.Status != StatusRevoked || cs.RevokedAt == nil || !cs.RevokedAt.Equal(t0.Add(time.Hour)) || cs.Reason == nil || *cs.Reason != crlreason.CessationOfOperation {
			t.Fatalf("disabled: %+v %v", cs, err)
		}
		revoked, err := v.RevokedCertificates(ctx, f.issuerKeyID, t0, "", 10)
		if err != nil || len(revoked) != 1 || revoked[0].Serial != serial {
			t.Fatalf("CRL entries: %+v %v", revoked, err)
		}
		if w, err := v.RevocationWatermark(ctx, f.issuerKeyID, t0); err != nil || w.Count != 1 {
			t.Fatalf("watermark: %+v %v", w, err)
		}
		if other, err := v.RevokedCertificates(ctx, "00", t0, "", 10); err != nil || len(other) != 0 {
			t.Fatalf("another issuer's entries: %+v %v", other, err)
		}
		// The device CA's view does not list it.
		if got, err := s.RevokedCertificates(ctx, f.issuerKeyID, t0, "", 10); err != nil || len(got) != 0 {
			t.Fatalf("credentials' CRL view lists an OBF certificate: %+v %v", got, err)
		}

		// OBFs from before obf_certificates: one with a sub-CA, one
		// disabled; the migration's backfill files them (idempotently).
		subDER, subSerial := f.issue(t, true)
		cl2, cl2Serial := f.issue(t, false)
		cl3, cl3Serial := f.issue(t, false)
		disabledAt := t0.Add(2 * time.Hour)
		err = s.tx(ctx, "legacy", func(q querier) error {
			for _, l := range []OBF{
				{ID: "legacy-obs", StakeholderID: "tenant-1", Name: "old line", Kind: OBS, Trusted: true, ClientCertSHA256: randomBytes(32), ClientCertDER: cl2, SubCADER: subDER, CreatedAt: t0},
				{ID: "legacy-tool", StakeholderID: "tenant-1", Name: "old tool", Kind: OBD, Trusted: true, ClientCertSHA256: randomBytes(32), ClientCertDER: cl3, CreatedAt: t0, DisabledAt: &disabledAt},
			} {
				if _, err := q.exec(ctx, `INSERT INTO obfs (`+obfColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
					l.ID, l.StakeholderID, l.Name, l.Kind, l.Trusted, l.ClientCertSHA256, l.ClientCertDER, l.SubCADER, l.CreatedAt.UTC(), l.DisabledAt); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if err := backfillOBFCertificates(ctx, s); err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range []struct {
			name, serial, status string
		}{
			{"legacy sub-CA", subSerial, StatusRevoked},
			{"legacy client certificate", cl2Serial, StatusActive},
			{"disabled OBF's client certificate", cl3Serial, StatusRevoked},
			{"already filed", serial, StatusRevoked},
		} {
			cs, err := v.CertificateStatusBySerial(ctx, c.serial)
			if err != nil || cs.Status != c.status {
				t.Errorf("%s: %+v %v, want %s", c.name, cs, err, c.status)
			}
		}
		if cs, _ := v.CertificateStatusBySerial(ctx, cl3Serial); cs.RevokedAt == nil || !cs.RevokedAt.Equal(disabledAt) {
			t.Errorf("disabled OBF's certificate revoked at %v, want %v", cs.RevokedAt, disabledAt)
		}
		if revoked, err := v.RevokedCertificates(ctx, f.issuerKeyID, t0, "", 10); err != nil || len(revoked) != 3 {
			t.Fatalf("CRL entries after the backfill: %+v %v", revoked, err)
		}
	})
}
