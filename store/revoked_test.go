package store

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"testing"
	"time"
)

// testIssuer is a CA that signs one leaf; the leaf's DER is reused for
// many registry rows (only its AKI matters to the status queries).
type testIssuer struct {
	keyID string
	leaf  []byte
}

func newTestIssuer(t testing.TB, name string) testIssuer {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	ski := sha256.Sum256([]byte(name))
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, NotBefore: now.Add(-time.Hour),
		NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, SubjectKeyId: ski[:20]}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "leaf"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}, caCert, &leafKey.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return testIssuer{keyID: hex.EncodeToString(ski[:20]), leaf: leaf}
}

// certCredential is a certificate row with the given serial; source says
// which path stored it.
func (ti testIssuer) certCredential(serial, source string, notAfter time.Time) Credential {
	sum := sha256.Sum256([]byte(ti.keyID + serial))
	s := serial
	return Credential{ID: "x509-" + hex.EncodeToString(sum[:]), AssignedID: "S" + serial, DeviceID: "dev-" + serial, Tenant: "t1",
		Type: TypeX509, SUID: 12, Serial: &s, CertSHA256: sum[:], CertDER: ti.leaf, TargetIDs: nil,
		NotBefore: notAfter.Add(-24 * time.Hour), NotAfter: notAfter, Status: StatusActive, Source: source, CreatedAt: time.Now()}
}

func TestAuthorityKeyID(t *testing.T) {
	ti := newTestIssuer(t, "aki test CA")
	parsed, err := x509.ParseCertificate(ti.leaf)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	self := &x509.Certificate{SerialNumber: big.NewInt(3), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	selfDER, err := x509.CreateCertificate(rand.Reader, self, self, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		der  []byte
		want []byte
	}{
		{"leaf", ti.leaf, parsed.AuthorityKeyId},
		{"no extensions", selfDER, nil},
		{"truncated", ti.leaf[:len(ti.leaf)/2], nil},
		{"garbage", []byte("not a certificate"), nil},
		{"empty", nil, nil},
	}
	for _, tt := range tests {
		if got := AuthorityKeyID(tt.der); !bytes.Equal(got, tt.want) {
			t.Errorf("%s: AuthorityKeyID = %x, want %x", tt.name, got, tt.want)
		}
	}
	if hex.EncodeToString(parsed.AuthorityKeyId) != ti.keyID {
		t.Fatalf("test issuer: leaf AKI %x, CA SKI %s", parsed.AuthorityKeyId, ti.keyID)
	}
}

func TestRevokedCertificatesPaging(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		ctx := context.Background()
		ours, obs := newTestIssuer(t, "our issuing CA"), newTestIssuer(t, "an OBS sub-CA")
		now := time.Now().UTC().Truncate(time.Millisecond)
		valid, expired := now.Add(365*24*time.Hour), now.Add(-time.Hour)

		type want struct {
			at     time.Time
			reason *int
		}
		wantOurs := map[string]want{}
		for i := range 23 {
			serial := fmt.Sprintf("%x", 0x1000+i*7)
			c := ours.certCredential(serial, SourceRSPF, valid)
			if i == 5 {
				c = ours.certCredential(serial, SourceRSPF, expired) // revoked, then expired: off the CRL
			}
			if err := s.RegisterCredential(ctx, c); err != nil {
				t.Fatal(err)
			}
			if i%4 == 3 {
				continue // stays active
			}
			reason := []int{0, 1, 4, 5}[i%4]
			at := now.Add(-time.Duration(i) * time.Minute)
			if _, err := s.Revoke(ctx, Revocation{ID: c.ID, Reason: reason, At: at, Actor: "test", Tenant: "t1"}); err != nil {
				t.Fatal(err)
			}
			if i != 5 {
				wantOurs[serial] = want{at, &reason}
			}
		}
		// Forwarded certificates of an OBS sub-CA, revoked too: never ours.
		for i := range 4 {
			c := obs.certCredential(fmt.Sprintf("%x", 0x1001+i*7), SourceForward, valid)
			if err := s.RegisterCredential(ctx, c); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Revoke(ctx, Revocation{ID: c.ID, Reason: 1, At: now.Add(time.Hour), Actor: "test", Tenant: "t1"}); err != nil {
				t.Fatal(err)
			}
		}

		for _, limit := range []int{1, 4, 17, 100} {
			got := map[string]want{}
			var order []string
			after, pages := "", 0
			for {
				page, err := s.RevokedCertificates(ctx, ours.keyID, now, after, limit)
				if err != nil {
					t.Fatal(err)
				}
				pages++
				for _, rc := range page {
					if _, dup := got[rc.Serial]; dup {
						t.Errorf("limit %d: serial %s on two pages", limit, rc.Serial)
					}
					got[rc.Serial] = want{rc.RevokedAt, rc.Reason}
					order = append(order, rc.Serial)
				}
				if len(page) < limit {
					break
				}
				after = page[len(page)-1].Serial
			}
			if !slices.IsSorted(order) {
				t.Errorf("limit %d: serials out of order: %v", limit, order)
			}
			if len(got) != len(wantOurs) {
				t.Errorf("limit %d: %d revoked serials in %d pages, want %d", limit, len(got), pages, len(wantOurs))
			}
			for serial, w := range wantOurs {
				g, ok := got[serial]
				if !ok {
					t.Errorf("limit %d: revoked serial %s missing", limit, serial)
					continue
				}
				if !g.at.Equal(w.at) || g.reason == nil || *g.reason != *w.reason {
					t.Errorf("limit %d: serial %s revoked at %v reason %v, want %v %d", limit, serial, g.at, g.reason, w.at, *w.reason)
				}
			}
		}
		obsPage, err := s.RevokedCertificates(ctx, obs.keyID, now, "", 100)
		if err != nil || len(obsPage) != 4 {
			t.Errorf("the sub-CA's own revoked list: %d entries, %v; want 4", len(obsPage), err)
		}
		if _, err := s.RevokedCertificates(ctx, ours.keyID, now, "", 0); err == nil {
			t.Error("limit 0 accepted")
		}

		wm, err := s.RevocationWatermark(ctx, ours.keyID, time.Time{})
		if err != nil || !wm.Latest.Equal(now) || wm.Count != 18 {
			t.Errorf("watermark %+v, %v; want the latest revocation %v and 18 of them (the sub-CA's do not count)", wm, err, now)
		}
		since := now.Add(-10 * time.Minute)
		recent, err := s.RevocationWatermark(ctx, ours.keyID, since)
		if err != nil || !recent.Latest.Equal(now) || recent.Count != 8 {
			t.Errorf("watermark since %v: %+v, %v; want 8 revocations", since, recent, err)
		}
		// A revocation that commits late, stamped before the latest one
		// already seen (a slow transaction, another replica's clock):
		// Latest stays, the count moves, so a CRL built before it is stale.
		late := ours.certCredential("1fff", SourceRSPF, valid)
		if err := s.RegisterCredential(ctx, late); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Revoke(ctx, Revocation{ID: late.ID, Reason: 1, At: now.Add(-3 * time.Minute), Actor: "test", Tenant: "t1"}); err != nil {
			t.Fatal(err)
		}
		if again, err := s.RevocationWatermark(ctx, ours.keyID, since); err != nil || again == recent || again.Count != 9 {
			t.Errorf("after a late revocation: %+v, %v; want it to differ from %+v", again, err, recent)
		}
		if wm, err := s.RevocationWatermark(ctx, "00", time.Time{}); err != nil || !wm.Latest.IsZero() || wm.Count != 0 {
			t.Errorf("watermark of an issuer without revocations: %+v, %v", wm, err)
		}

		st, err := s.CertificateStatusBySerial(ctx, fmt.Sprintf("%x", 0x1000+1*7))
		if err != nil || st.IssuerKeyID != ours.keyID || st.Status != StatusRevoked || st.RevokedAt == nil || st.Reason == nil || *st.Reason != 1 {
			t.Errorf("status of a revoked serial: %+v, %v", st, err)
		}
		st, err = s.CertificateStatusBySerial(ctx, fmt.Sprintf("%x", 0x1000+3*7))
		if err != nil || st.Status != StatusActive || st.RevokedAt != nil {
			t.Errorf("status of an active serial: %+v, %v", st, err)
		}
		st, err = s.CertificateStatusBySerial(ctx, fmt.Sprintf("%x", 0x1001))
		if err != nil || st.IssuerKeyID != obs.keyID {
			t.Errorf("a forwarded serial is filed under its sub-CA: %+v, %v", st, err)
		}
		if _, err := s.CertificateStatusBySerial(ctx, "ffff"); !errors.Is(err, ErrNotFound) {
			t.Errorf("unknown serial: %v, want ErrNotFound", err)
		}
	})
}

func TestIssuerKeyIDBackfill(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		ctx := context.Background()
		ti := newTestIssuer(t, "backfill CA")
		var ids []string
		for i := range 7 {
			c := ti.certCredential(fmt.Sprintf("%x", 0x500+i), SourceRSPF, time.Now().Add(time.Hour))
			if err := s.RegisterCredential(ctx, c); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, c.ID)
		}
		// As rows written before migration 2 look.
		if err := s.tx(ctx, "test", func(q querier) error {
			_, err := q.exec(ctx, `UPDATE credentials SET issuer_key_id = NULL, status = 'revoked', revoked_at = $1`, time.Now().UTC())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if page, err := s.RevokedCertificates(ctx, ti.keyID, time.Now(), "", 100); err != nil || len(page) != 0 {
			t.Fatalf("before the backfill: %d entries, %v", len(page), err)
		}
		// As a replica of the previous release writes them during a rolling
		// upgrade, after migration 2 ran: the sweep's run picks them up.
		if _, err := s.Sweep(ctx, SweepOptions{Holder: "replica-1"}); err != nil {
			t.Fatal(err)
		}
		page, err := s.RevokedCertificates(ctx, ti.keyID, time.Now(), "", 100)
		if err != nil || len(page) != len(ids) {
			t.Errorf("after the backfill: %d entries, %v; want %d", len(page), err, len(ids))
		}
		// Idempotent: a second run finds nothing to do and ends.
		if err := backfillIssuerKeyIDs(ctx, s); err != nil {
			t.Fatal(err)
		}
		// A certificate naming no issuer key leaves the work list too, so
		// the sweep does not re-read it every run.
		anon := certCredential()
		anon.AssignedID, anon.DeviceID, anon.Tenant = "Sanon", "dev-anon", "t1"
		anon.NotBefore, anon.NotAfter = t0, t0.Add(time.Hour)
		if err := s.RegisterCredential(ctx, anon); err != nil {
			t.Fatal(err)
		}
		if err := backfillIssuerKeyIDs(ctx, s); err != nil {
			t.Fatal(err)
		}
		var pending int
		if err := s.read(ctx, func(q querier) error {
			return q.queryRow(ctx, `SELECT COUNT(*) FROM credentials WHERE type = 'x509' AND issuer_key_id IS NULL`).Scan(&pending)
		}); err != nil || pending != 0 {
			t.Errorf("%d certificates left on the backfill's work list (%v), want 0", pending, err)
		}
	})
}

func TestNextCRLNumber(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		ctx := context.Background()
		tests := []struct {
			name    string
			issuer  string
			atLeast int64
			want    int64
		}{
			{"first number is the clock's", "aa", 1000, 1000},
			{"clock ahead", "aa", 2000, 2000},
			{"clock behind: one more than the last", "aa", 1500, 2001},
			{"same instant", "aa", 2001, 2002},
			{"another issuer counts on its own", "bb", 10, 10},
			{"ns since 1970 fit", "cc", time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano(), time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()},
		}
		for _, tt := range tests {
			if got, err := s.NextCRLNumber(ctx, tt.issuer, tt.atLeast); err != nil || got != tt.want {
				t.Errorf("%s: %d %v, want %d", tt.name, got, err, tt.want)
			}
		}
	})
}
