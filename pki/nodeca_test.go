package pki_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
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

// TestAddNodeCAToOlderInstallation: an installation made before the node
// CA serves without it (Node-ID issuance answers ErrNoNodeCA, nothing else
// changes); the admin ceremony adds it, the root's one signature on the
// audit trail; from then on Open has it, its Node-ID certificates verify
// with Go and openssl verify -CAfile root -untrusted node, and /readyz's
// key check names its key once that is gone from the token.
func TestAddNodeCAToOlderInstallation(t *testing.T) {
	ctx := context.Background()
	c, err := config.Load(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pki.Init(ctx, c); err != nil {
		t.Fatal(err)
	}
	// An older installation: no node CA certificate, no key of that name.
	if err := os.Remove(filepath.Join(c.DataDir, pki.NodeCertFile)); err != nil {
		t.Fatal(err)
	}
	c.CA.NodeKey = "pkcs11:object=credfactory-node-ca-added;type=private"

	p, err := pki.Open(ctx, c, nil)
	if err != nil {
		t.Fatalf("serve refuses an installation without a node CA: %v", err)
	}
	if p.NodeCA != nil || !errors.Is(p.NodeCAErr, pki.ErrNoNodeCA) {
		t.Fatalf("node CA %v, err %v", p.NodeCA, p.NodeCAErr)
	}
	if err := p.KeysPresent(ctx); err != nil {
		t.Fatalf("readiness without a node CA: %v", err)
	}
	p.Close()
	if _, err := os.Stat(filepath.Join(c.DataDir, pki.NodeCertFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Open made a node CA: %v", err)
	}

	var trail bytes.Buffer
	audit := slog.New(slog.NewJSONHandler(&trail, nil))
	created, err := pki.AddNodeCA(ctx, c, pki.WithAudit(audit))
	if err != nil {
		t.Fatal(err)
	}
	if len(created) != 2 || !strings.HasPrefix(created[0], "HSM key ") || !strings.HasPrefix(created[1], "node CA certificate ") {
		t.Fatalf("created %q", created)
	}
	if n := strings.Count(trail.String(), `"msg":"signed ceremony"`); n != 1 || !strings.Contains(trail.String(), `"key":"`+c.CA.RootKey+`"`) {
		t.Fatalf("audit trail of the ceremony (%d root signatures):\n%s", n, trail.String())
	}
	trail.Reset()
	if again, err := pki.AddNodeCA(ctx, c, pki.WithAudit(audit)); err != nil || len(again) != 0 || trail.Len() != 0 {
		t.Fatalf("a second add-node-ca: %q, %v, trail %s", again, err, trail.String())
	}

	p, err = pki.Open(ctx, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.NodeCA == nil || p.NodeCAErr != nil {
		t.Fatalf("node CA after the ceremony: %v", p.NodeCAErr)
	}
	node := p.NodeCA.Issuer()
	if err := node.CheckSignatureFrom(p.Root); err != nil || !node.MaxPathLenZero || node.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Fatalf("node CA certificate: %v", err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	const id = "urn:gsma:imei:90420156-025763-0"
	u, _ := url.Parse(id)
	issued, err := p.NodeCA.Issue(ctx, ca.Request{CSR: csr, Profile: ca.ProfileNodeID, AssignedID: id, URIs: []*url.URL{u}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.CA.Issue(ctx, ca.Request{CSR: csr, Profile: ca.ProfileNodeID, AssignedID: id, URIs: []*url.URL{u}}); err == nil {
		t.Fatal("the AE-ID issuing CA signs a Node-ID certificate")
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(p.Root)
	inter.AddCert(node)
	if _, err := issued.Certificate.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("Go: %v", err)
	}
	dir := t.TempDir()
	leafFile := filepath.Join(dir, "leaf.pem")
	if err := os.WriteFile(leafFile, ca.EncodeCertsPEM([]*x509.Certificate{issued.Certificate}), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("openssl", "verify", "-CAfile", c.TrustAnchorPath(), "-untrusted", filepath.Join(c.DataDir, pki.NodeCertFile),
		"-purpose", "sslclient", leafFile).CombinedOutput()
	if err != nil || !strings.Contains(string(out), ": OK") {
		t.Fatalf("openssl verify: %v\n%s", err, out)
	}
	// Under the issuing CA instead, the URN fails OpenSSL's URI constraint.
	out, err = exec.Command("openssl", "verify", "-CAfile", c.TrustAnchorPath(), "-untrusted", filepath.Join(c.DataDir, pki.IssuingCertFile),
		"-purpose", "sslclient", leafFile).CombinedOutput()
	if err == nil {
		t.Fatalf("openssl verifies a Node-ID certificate through the issuing CA:\n%s", out)
	}

	// The key gone from the token: readiness names it.
	pin, err := os.ReadFile(c.HSM.PINFile)
	if err != nil {
		t.Fatal(err)
	}
	del := exec.Command("pkcs11-tool", "--module", c.HSM.Module, "--token-label", c.HSM.TokenLabel, "--login", "--pin", "env:PIN",
		"--delete-object", "--type", "privkey", "--label", "credfactory-node-ca-added")
	del.Env = append(os.Environ(), "PIN="+strings.TrimSpace(string(pin)), "SOFTHSM2_CONF="+os.Getenv("SOFTHSM2_CONF"))
	if out, err := del.CombinedOutput(); err != nil {
		t.Skipf("pkcs11-tool cannot delete the key here: %v\n%s", err, out)
	}
	if err := p.KeysPresent(ctx); err == nil || !strings.Contains(err.Error(), "credfactory-node-ca-added") {
		t.Fatalf("readiness with the node CA key gone: %v", err)
	}
}
