package store_test

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/credfactory/credfactory/ca"
	"github.com/credfactory/credfactory/ca/catest"
	"github.com/credfactory/credfactory/castatus"
	"github.com/credfactory/credfactory/store"
	"github.com/credfactory/credfactory/store/storetest"
)

// BenchmarkCRLGeneration100k builds and signs the issuing CA's CRL from a
// registry holding 100,000 revoked certificates of that CA (plus active
// ones, which the partial index skips), through castatus's paging: what a
// scheduled or on-demand regeneration costs. Reported per CRL: ms/crl and
// the entry count. The signature is a software key here; with SoftHSM it
// is one more ~0.2 ms signature, nothing at this scale.
func BenchmarkCRLGeneration100k(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) {
		benchCRL(b, "sqlite://"+filepath.Join(b.TempDir(), "registry.db"))
	})
	b.Run("postgres", func(b *testing.B) { benchCRL(b, storetest.PostgresURL(b)) })
}

func benchCRL(b *testing.B, dbURL string) {
	const revoked, active = 100_000, 10_000
	ctx := context.Background()
	st, err := store.Open(ctx, dbURL, store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	p := catest.New(b)
	leaf := p.Leaf(b, ca.Request{Profile: ca.ProfileDevice, AssignedID: "Sbench", URIs: []*url.URL{{Host: "sp.example", Path: "/Sbench"}}}).Leaf
	now := time.Now().UTC()
	revokedAt := now.Add(-time.Hour)
	creds := make([]store.Credential, 0, revoked+active)
	for i := range revoked + active {
		serial := fmt.Sprintf("%x", uint64(i)*0x9e3779b97f4a7c15|1<<63) // spread, like random serials
		sum := sha256.Sum256([]byte(serial))
		c := store.Credential{ID: fmt.Sprintf("x509-%x", sum), AssignedID: "S" + serial, DeviceID: "d" + serial, Tenant: "t",
			Type: store.TypeX509, SUID: 12, Serial: &serial, CertSHA256: sum[:], CertDER: leaf.Raw, NotBefore: now.Add(-time.Hour),
			NotAfter: now.Add(365 * 24 * time.Hour), Status: store.StatusActive, Source: store.SourceRSPF, CreatedAt: now}
		if i < revoked {
			reason := []int{0, 1, 4, 5}[i%4]
			c.Status, c.RevokedAt, c.RevocationReason = store.StatusRevoked, &revokedAt, &reason
		}
		creds = append(creds, c)
	}
	if err := st.InsertRevokedForTest(ctx, creds); err != nil {
		b.Fatal(err)
	}
	svc, err := castatus.New(p.CA, st, castatus.Config{})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	var crl *ca.CRL
	for b.Loop() {
		if crl, err = svc.Generate(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if crl.Entries != revoked {
		b.Fatalf("CRL has %d entries, want %d", crl.Entries, revoked)
	}
	parsed, err := x509.ParseRevocationList(crl.DER)
	if err != nil || len(parsed.RevokedCertificateEntries) != revoked || parsed.CheckSignatureFrom(p.Issuing) != nil {
		b.Fatalf("the CRL does not parse with %d entries and a good signature: %v", revoked, err)
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/crl")
	b.ReportMetric(float64(len(crl.DER))/1e6, "MB/crl")
	b.ReportMetric(float64(crl.Entries), "entries")
}
