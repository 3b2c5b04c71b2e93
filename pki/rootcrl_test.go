package pki_test

import (
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/credfactory/credfactory/pki"
)

// TestRootCRL: init signs the root's CRL (empty, a year's validity), keeps
// it while it is fresh, re-signs it when it is not, and serve loads it; a
// file not signed by the root is refused, and a missing one says to run
// init.
func TestRootCRL(t *testing.T) {
	ctx := context.Background()
	file := filepath.Join(cfg.DataDir, pki.RootCRLFile)
	first, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	l, err := x509.ParseRevocationList(first)
	if err != nil {
		t.Fatal(err)
	}
	forged := signedByIssuing(t, ctx)
	p, err := pki.Open(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	if err := l.CheckSignatureFrom(p.Root); err != nil || len(l.RevokedCertificateEntries) != 0 ||
		l.NextUpdate.Sub(l.ThisUpdate) < 360*24*time.Hour || l.Number == nil {
		t.Fatalf("root CRL: %v, %d entries, %v to %v", err, len(l.RevokedCertificateEntries), l.ThisUpdate, l.NextUpdate)
	}
	if p.RootCRL == nil || string(p.RootCRL.DER) != string(first) {
		t.Fatalf("serve's root CRL: %v", p.RootCRLErr)
	}

	for _, c := range []struct {
		name    string
		content []byte
		loadErr string
	}{
		{"missing", nil, "run credfactory init"},
		{"not a CRL", []byte("junk"), "root.crl"},
		// The issuing CA's key is not the root's.
		{"signed by another key", forged, "not signed by the root"},
	} {
		if c.content == nil {
			os.Remove(file)
		} else {
			os.WriteFile(file, c.content, 0o644)
		}
		q, err := pki.Open(ctx, cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		if q.RootCRL != nil || q.RootCRLErr == nil || !strings.Contains(q.RootCRLErr.Error(), c.loadErr) {
			t.Errorf("%s: %v, want an error with %q", c.name, q.RootCRLErr, c.loadErr)
		}
		q.Close()
		created, err := pki.Init(ctx, cfg)
		if err != nil || len(created) != 1 || !strings.Contains(created[0], "root CRL") {
			t.Errorf("%s: init made %q (%v), want a new root CRL", c.name, created, err)
		}
	}
	again, _ := os.ReadFile(file)
	if created, err := pki.Init(ctx, cfg); err != nil || len(created) != 0 {
		t.Fatalf("init with a fresh root CRL: %q %v", created, err)
	}
	if now, _ := os.ReadFile(file); string(now) != string(again) {
		t.Fatal("init re-signed a fresh root CRL")
	}
}

// signedByIssuing is a CRL with the root's name signed by the issuing CA.
func signedByIssuing(t *testing.T, ctx context.Context) []byte {
	t.Helper()
	p, err := pki.Open(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	crl, err := p.CA.SignCRL(ctx, nil, time.Now(), time.Now().Add(time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	return crl.DER
}
