package pki_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/credfactory/credfactory/ca"
	"github.com/credfactory/credfactory/config"
	"github.com/credfactory/credfactory/pki"
)

var cfg config.Config

// TestMain runs the ceremony once into a fresh data directory: every test
// here works on the same SoftHSM token, as serve does.
func TestMain(m *testing.M) {
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "credfactory-pki-test-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		cfg, err = config.Load(dir, "")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		cfg.Server.Hostnames = []string{"mef.sp.example", "192.0.2.10"}
		created, err := pki.Init(context.Background(), cfg)
		if err != nil {
			fmt.Fprintln(os.Stderr, "init:", err)
			return 1
		}
		if len(created) < 8 {
			fmt.Fprintf(os.Stderr, "first init created only %q\n", created)
			return 1
		}
		return m.Run()
	}())
}

func TestInitIsIdempotent(t *testing.T) {
	files := []string{pki.RootCertFile, pki.IssuingCertFile, pki.ServerCertFile, "trust-anchor.pem", "hsm/hsm-pin"}
	before := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(cfg.DataDir, f))
		if err != nil {
			t.Fatal(err)
		}
		before[f] = string(b)
	}
	created, err := pki.Init(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(created) != 0 {
		t.Fatalf("second init created %q", created)
	}
	for _, f := range files {
		b, _ := os.ReadFile(filepath.Join(cfg.DataDir, f))
		if string(b) != before[f] {
			t.Errorf("second init changed %s", f)
		}
	}
	st, err := os.Stat(filepath.Join(cfg.DataDir, "hsm/hsm-pin"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("PIN file mode %v, %v; want 0600", st.Mode().Perm(), err)
	}
}

// TestOpenRefusesAnotherSPDomain: the issuing CA confines device URIs to
// the SP domain init ran with; serving another would issue certificates
// nobody accepts.
func TestOpenRefusesAnotherSPDomain(t *testing.T) {
	other := cfg
	other.Portal.SPDomain = "other.example"
	if p, err := pki.Open(context.Background(), other, nil); err == nil || !strings.Contains(err.Error(), "portal.sp_domain \"other.example\"") {
		if p != nil {
			p.Close()
		}
		t.Fatalf("Open with another SP domain: %v", err)
	}
}

func TestOpenIssuesChainsToTrustAnchor(t *testing.T) {
	p, err := pki.Open(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	anchorPEM, err := os.ReadFile(cfg.TrustAnchorPath())
	if err != nil {
		t.Fatal(err)
	}
	anchors, err := ca.ParseCertsPEM(anchorPEM)
	if err != nil || len(anchors) != 1 || !anchors[0].IsCA {
		t.Fatalf("trust anchor: %v %v", anchors, err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(anchors[0])

	// The server certificate names loopback and the configured hosts.
	inter := x509.NewCertPool()
	inter.AddCert(p.Issuing)
	for _, name := range []string{"localhost", "127.0.0.1", "::1", "mef.sp.example", "192.0.2.10"} {
		if _, err := p.TLS().Leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inter}); err != nil {
			t.Errorf("server certificate for %s: %v", name, err)
		}
	}

	// A device certificate from the HSM-backed CA.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	// TS-0003 §10.1.1.5: the issuing CA's name constraints bind the host
	// of the AE-ID's full URI, the SP domain.
	if got := p.Issuing.PermittedURIDomains; len(got) != 1 || got[0] != cfg.Portal.SPDomain || len(p.Issuing.PermittedDNSDomains) != 0 {
		t.Fatalf("issuing CA permits URI hosts %v and DNS names %v, want URIs under %s only", got, p.Issuing.PermittedDNSDomains, cfg.Portal.SPDomain)
	}
	uri, _ := url.Parse("https://" + cfg.Portal.SPDomain + "/Sdevice-1")
	issued, err := p.CA.Issue(context.Background(), ca.Request{CSR: csr, Profile: ca.ProfileDevice, AssignedID: "Sdevice-1", URIs: []*url.URL{uri}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := issued.Certificate.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("device certificate does not chain: %v", err)
	}

	dir := t.TempDir()
	leafFile, chainFile := filepath.Join(dir, "leaf.pem"), filepath.Join(dir, "chain.pem")
	if err := os.WriteFile(leafFile, ca.EncodeCertsPEM([]*x509.Certificate{issued.Certificate}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(chainFile, ca.EncodeCertsPEM(issued.Chain), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("openssl", "verify", "-CAfile", cfg.TrustAnchorPath(), "-untrusted", chainFile,
		"-purpose", "sslclient", leafFile).CombinedOutput()
	if err != nil || !strings.Contains(string(out), ": OK") {
		t.Fatalf("openssl verify: %v\n%s", err, out)
	}
	// The constraints are in play: another host's URI does not chain, for
	// Go and for OpenSSL.
	other, _ := url.Parse("https://other.example/Sdevice-1")
	outside, err := p.CA.Issue(context.Background(), ca.Request{CSR: csr, Profile: ca.ProfileDevice, AssignedID: "Sdevice-1", URIs: []*url.URL{other}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := outside.Certificate.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Fatal("a URI outside the SP domain chains in Go")
	}
	if err := os.WriteFile(leafFile, ca.EncodeCertsPEM([]*x509.Certificate{outside.Certificate}), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command("openssl", "verify", "-CAfile", cfg.TrustAnchorPath(), "-untrusted", chainFile,
		"-purpose", "sslclient", leafFile).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "permitted subtree violation") {
		t.Fatalf("openssl verify of a URI outside the constraints: %v\n%s", err, out)
	}

	// The TLS key is the HSM's: its signature verifies with the leaf's key.
	digest := sha256.Sum256([]byte("tls"))
	sig, err := p.TLS().PrivateKey.(crypto.Signer).Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil || !ecdsa.VerifyASN1(p.TLS().Leaf.PublicKey.(*ecdsa.PublicKey), digest[:], sig) {
		t.Fatalf("TLS key does not match its certificate: %v", err)
	}
}

func TestOpenRefusesForeignCertificate(t *testing.T) {
	// An issuing certificate swapped for one of another key must stop serve.
	file := filepath.Join(cfg.DataDir, pki.IssuingCertFile)
	orig, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.WriteFile(file, orig, 0o644) })
	root, _ := os.ReadFile(filepath.Join(cfg.DataDir, pki.RootCertFile))
	if err := os.WriteFile(file, root, 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := pki.Open(context.Background(), cfg, nil)
	if err == nil {
		p.Close()
	}
	// The signer check must be what refuses, not any other failure to open.
	if !errors.Is(err, ca.ErrSignerMismatch) {
		t.Fatalf("serve would start with an issuing certificate that is not its key's: got %v, want ErrSignerMismatch", err)
	}
}

// BenchmarkIssueHSM measures device certificate issuance with the issuing key
// in SoftHSM: CSR check, profile, (lint), HSM signature, and the stdlib's
// re-verification inside x509.CreateCertificate.
func BenchmarkIssueHSM(b *testing.B) {
	for _, lint := range []bool{false, true} {
		b.Run(fmt.Sprintf("lint=%v", lint), func(b *testing.B) {
			c := cfg
			c.CA.Lint = lint
			p, err := pki.Open(context.Background(), c, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
			uri, _ := url.Parse("https://" + cfg.Portal.SPDomain + "/Sbench")
			req := ca.Request{CSR: csr, Profile: ca.ProfileDevice, AssignedID: "Sbench", URIs: []*url.URL{uri}}
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := p.CA.Issue(context.Background(), req); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "certs/s")
		})
	}
}

func TestServerCertFollowsConfiguredNames(t *testing.T) {
	c := cfg
	c.Server.Hostnames = append(append([]string(nil), cfg.Server.Hostnames...), "renewed.sp.example")
	p, err := pki.Open(context.Background(), c, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.TLS().Leaf.VerifyHostname("renewed.sp.example"); err != nil {
		t.Fatalf("a newly configured host name was not added at start: %v", err)
	}
	got, err := p.GetCertificate(nil)
	if err != nil || got != p.TLS() {
		t.Fatal("GetCertificate does not serve the current identity")
	}
	if renewed, err := p.RenewServerCert(context.Background()); err != nil || renewed {
		t.Fatalf("a fresh certificate was renewed again: %v %v", renewed, err)
	}
}

// TestInitAuditsCeremony: every signature the ceremony makes with the root
// (its own certificate, the root CRL, the issuing and OBF CA certificates)
// and the server certificate it issues leave their two audit records; a
// second init signs nothing and records nothing.
func TestInitAuditsCeremony(t *testing.T) {
	dir := t.TempDir()
	c, err := config.Load(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	var trail bytes.Buffer
	audit := slog.New(slog.NewJSONHandler(&trail, nil))
	if _, err := pki.Init(context.Background(), c, pki.WithAudit(audit)); err != nil {
		t.Fatal(err)
	}
	count := func(msg string) int { return strings.Count(trail.String(), `"msg":"`+msg+`"`) }
	if got := [4]int{count("signing ceremony"), count("signed ceremony"), count("signing certificate"), count("signed certificate")}; got != [4]int{5, 5, 1, 1} {
		t.Fatalf("audit records (root before/after, issuer before/after) = %v, want [5 5 1 1]:\n%s", got, trail.String())
	}
	if !strings.Contains(trail.String(), `"key":"`+c.CA.RootKey+`"`) || !strings.Contains(trail.String(), `"outcome":"ok"`) {
		t.Fatalf("ceremony records do not name the root key and outcome:\n%s", trail.String())
	}
	trail.Reset()
	if _, err := pki.Init(context.Background(), c, pki.WithAudit(audit)); err != nil {
		t.Fatal(err)
	}
	if trail.Len() != 0 {
		t.Fatalf("a second init signed something:\n%s", trail.String())
	}
}
