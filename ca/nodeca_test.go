package ca

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"net/url"
	"strings"
	"testing"
)

// TestNodeCA: a Node-ID certificate (a URN, no host) from the node CA,
// linted, verifies with Go and with openssl verify for client
// authentication; the node CA issues no other profile, and a server
// certificate signed with its key anyway fails both for serverAuth (its
// clientAuth-only EKU); the AE-ID issuing CA (URI constraint on the SP
// domain, TS-0003 §10.1.1.5) fails a URN in both and refuses to sign one.
func TestNodeCA(t *testing.T) {
	p := newTestPKI(t)
	nodeKey := testKey(t, "p256-b")
	nodeCA, err := CreateNodeCA(p.root, p.rootKey, nodeKey.Public(), pkix.Name{CommonName: "node CA"}, 365*day, p.now)
	if err != nil {
		t.Fatal(err)
	}
	if !nodeCA.MaxPathLenZero || len(nodeCA.ExtKeyUsage) != 1 || nodeCA.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Fatalf("node CA shape: pathlen %d EKU %v", nodeCA.MaxPathLen, nodeCA.ExtKeyUsage)
	}
	nodes, err := New(Config{Issuer: nodeCA, Signer: nodeKey, Chain: []*x509.Certificate{nodeCA, p.root}, Lint: true, Profiles: []Profile{ProfileNodeID},
		CRLURL: CRLURL("http://status.sp.example", NodeCRLName), OCSPURL: OCSPURL("http://status.sp.example")})
	if err != nil {
		t.Fatal(err)
	}
	issKey := testKey(t, "p256")
	issuing, err := CreateIssuingCA(p.root, p.rootKey, issKey.Public(), pkix.Name{CommonName: "AE-ID issuing CA"}, 365*day, p.now, "sp.example")
	if err != nil {
		t.Fatal(err)
	}
	aeCA, err := New(Config{Issuer: issuing, Signer: issKey, Chain: []*x509.Certificate{issuing, p.root}, Lint: true})
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(p.root)
	verify := func(inter, leaf *x509.Certificate) (goErr error, sslOut string, sslErr error) {
		pool := x509.NewCertPool()
		pool.AddCert(inter)
		_, goErr = leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		sslOut, sslErr = opensslVerify(t, p.root, []*x509.Certificate{inter}, leaf, "")
		return
	}

	for _, id := range []string{"urn:gsma:imei:90420156-025763-0", "urn:oid:1.2.410.200074.1.1.1",
		"urn:dev:ow:" + strings.Repeat("a", 60)} { // the last one is too long for the CN
		t.Run("Node-ID "+id, func(t *testing.T) {
			got, err := nodes.Issue(context.Background(), Request{CSR: makeCSR(t, testKey(t, "p256"), &x509.CertificateRequest{}),
				Profile: ProfileNodeID, AssignedID: id, URIs: []*url.URL{mustURL(t, id)}})
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			leaf := got.Certificate
			if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id || len(leaf.DNSNames)+len(leaf.IPAddresses) != 0 {
				t.Fatalf("SAN %v %v %v", leaf.URIs, leaf.DNSNames, leaf.IPAddresses)
			}
			if wantCN := len(id) <= maxCommonNameLen; (leaf.Subject.CommonName == id) != wantCN {
				t.Errorf("CN %q", leaf.Subject.CommonName)
			}
			if leaf.KeyUsage != x509.KeyUsageDigitalSignature || len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
				t.Errorf("keyUsage %v EKU %v", leaf.KeyUsage, leaf.ExtKeyUsage)
			}
			if len(leaf.CRLDistributionPoints) != 1 || !strings.HasSuffix(leaf.CRLDistributionPoints[0], "/node.crl") || len(leaf.OCSPServer) != 1 {
				t.Errorf("status pointers %v %v", leaf.CRLDistributionPoints, leaf.OCSPServer)
			}
			if goErr, out, sslErr := verify(nodeCA, leaf); goErr != nil || sslErr != nil {
				t.Fatalf("under the node CA: Go %v; openssl %v: %s", goErr, sslErr, out)
			}
			if out, err := opensslVerify(t, p.root, []*x509.Certificate{nodeCA}, leaf, "sslclient"); err != nil {
				t.Fatalf("openssl -purpose sslclient: %v: %s", err, out)
			}
			// The same URN under the AE-ID issuing CA: refused before
			// signing, and a certificate signed anyway fails Go and
			// OpenSSL both.
			_, err = aeCA.Issue(context.Background(), Request{CSR: makeCSR(t, testKey(t, "p256"), &x509.CertificateRequest{}),
				Profile: ProfileNodeID, AssignedID: id, URIs: []*url.URL{mustURL(t, id)}})
			if !errors.Is(err, ErrPolicy) || !strings.Contains(err.Error(), "no host") {
				t.Fatalf("AE-ID issuing CA signs a Node-ID: %v", err)
			}
			forged := signRaw(t, issuing, issKey, &x509.Certificate{URIs: []*url.URL{mustURL(t, id)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
			if goErr, out, sslErr := verify(issuing, forged); goErr == nil || sslErr == nil {
				t.Fatalf("a URN under the URI-constrained issuing CA verifies: Go %v; openssl %v: %s", goErr, sslErr, out)
			}
		})
	}

	// The node CA can never mint a server identity: it issues Node-ID
	// certificates only, and a server certificate signed with its key
	// anyway fails Go and OpenSSL for serverAuth.
	for _, req := range []Request{
		{Profile: ProfileServer, DNSNames: []string{"mef.sp.example"}},
		{Profile: ProfileDevice, AssignedID: "Sdevice1", URIs: []*url.URL{mustURL(t, "https://sp.example/Sdevice1")}},
	} {
		req.CSR = makeCSR(t, testKey(t, "p256"), &x509.CertificateRequest{})
		if _, err := nodes.Issue(context.Background(), req); !errors.Is(err, ErrPolicy) || !strings.Contains(err.Error(), "does not issue") {
			t.Fatalf("node CA issues profile %s: %v", req.Profile, err)
		}
	}
	for name, leaf := range map[string]*x509.Certificate{
		"DNS name": {DNSNames: []string{"mef.sp.example"}},
		"IPv4":     {IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1).To4()}},
	} {
		t.Run("forged server "+name, func(t *testing.T) {
			leaf.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
			forged := signRaw(t, nodeCA, nodeKey, leaf)
			pool := x509.NewCertPool()
			pool.AddCert(nodeCA)
			_, goErr := forged.Verify(x509.VerifyOptions{Roots: roots, Intermediates: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
			var cie x509.CertificateInvalidError
			if !errors.As(goErr, &cie) || cie.Reason != x509.IncompatibleUsage {
				t.Errorf("Go: %v; want incompatible usage", goErr)
			}
			if out, err := opensslVerify(t, p.root, []*x509.Certificate{nodeCA}, forged, "sslserver"); err == nil {
				t.Errorf("openssl -purpose sslserver accepts it: %s", out)
			}
		})
	}
}

// TestNodeCAConstraintsAndGo is why the node CA carries no name
// constraints (CreateNodeCA): under a CA that excludes every DNS name and
// IP address, which constrains no URI, OpenSSL verifies a URN leaf while
// Go refuses it. Should Go start accepting it, this test fails, and the
// node CA can take the excluded subtrees.
func TestNodeCAConstraintsAndGo(t *testing.T) {
	p := newTestPKI(t)
	key := testKey(t, "p256-b")
	constrained, err := createIntermediate(p.root, p.rootKey, key.Public(), pkix.Name{CommonName: "constrained node CA"}, 365*day, p.now, 0,
		[]x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, caConstraints{noHostNames: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(constrained.ExcludedDNSDomains) != 1 || len(constrained.ExcludedIPRanges) != 2 || !constrained.PermittedDNSDomainsCritical {
		t.Fatalf("constraints: DNS %q IP %v", constrained.ExcludedDNSDomains, constrained.ExcludedIPRanges)
	}
	leaf := signRaw(t, constrained, key, &x509.Certificate{URIs: []*url.URL{mustURL(t, "urn:gsma:imei:90420156-025763-0")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	roots, pool := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(p.root)
	pool.AddCert(constrained)
	_, goErr := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if goErr == nil || !strings.Contains(goErr.Error(), "empty host") {
		t.Fatalf("Go: %v; want the empty-host refusal (if Go now accepts a URN here, give the node CA excluded subtrees)", goErr)
	}
	if out, err := opensslVerify(t, p.root, []*x509.Certificate{constrained}, leaf, "sslclient"); err != nil {
		t.Fatalf("openssl refuses a URN under DNS/IP exclusions: %v: %s", err, out)
	}
	// And the exclusions do work, in both, for what they exclude.
	server := signRaw(t, constrained, key, &x509.Certificate{DNSNames: []string{"mef.sp.example"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if _, err := server.Verify(x509.VerifyOptions{Roots: roots, Intermediates: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Error("Go accepts an excluded DNS name")
	}
	if out, err := opensslVerify(t, p.root, []*x509.Certificate{constrained}, server, ""); err == nil || !strings.Contains(out, "excluded subtree") {
		t.Errorf("openssl: %v: %s", err, out)
	}
}

// signRaw signs leaf's names with the issuer's key directly, bypassing
// every check of Issue, as a leaked or misused CA key would.
func signRaw(t *testing.T, issuer *x509.Certificate, key crypto.Signer, leaf *x509.Certificate) *x509.Certificate {
	t.Helper()
	leaf.SerialNumber = big.NewInt(42)
	leaf.NotBefore, leaf.NotAfter = issuer.NotBefore, issuer.NotAfter
	leaf.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, leaf, issuer, testKey(t, "p256").Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
