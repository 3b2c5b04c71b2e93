package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/credfactory/credfactory/ca"
	"github.com/credfactory/credfactory/client"
)

// tenants is an SP with two subscribers, alice and bob, each owning one
// device and running one trusted OBS: the setting of a cross-tenant
// attack.
type tenants struct {
	*sp
	admin, alice, bob string // API keys
	aliceOBS, bobOBS  map[string]any
	aliceKey, bobKey  *ecdsa.PrivateKey
	anchorPath        string
}

func newTenants(t *testing.T, env ...string) *tenants {
	s := &tenants{sp: startSP(t, append([]string{"CREDFACTORY_PORTAL_SP_DOMAIN=sp.example"}, env...)...)}
	s.admin = s.stakeholder("admin", "sp-admin")
	acme := s.stakeholder("acme", "manufacturer")
	s.alice = s.stakeholder("alice", "subscriber")
	s.bob = s.stakeholder("bob", "subscriber")
	s.anchorPath = filepath.Join(s.dir, "trust-anchor.pem")
	if status, body := s.call(acme, "POST", "/api/v1/devices", "text/csv", []byte("deviceId,claimCode\na-1,label-a1\nb-1,label-b1\n")); status != 200 {
		t.Fatalf("upload: %d %v", status, body)
	}
	for owner, dev := range map[string]string{"alice": "a-1", "bob": "b-1"} {
		if status, body := s.call(acme, "POST", "/api/v1/handovers", "application/json", mustJSON(map[string]any{"subscriber": owner, "deviceIds": []string{dev}})); status != 200 {
			t.Fatalf("hand over: %d %v", status, body)
		}
	}
	s.aliceKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s.bobKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s.aliceOBS = s.registerOBS("alice-line", "alice", s.aliceKey)
	s.bobOBS = s.registerOBS("bob-line", "bob", s.bobKey)
	return s
}

func (s *tenants) registerOBS(name, owner string, key *ecdsa.PrivateKey) map[string]any {
	s.t.Helper()
	status, body := s.call(s.admin, "POST", "/api/v1/obfs", "application/json", mustJSON(map[string]any{
		"name": name, "kind": "obs", "trusted": true, "owner": owner, "clientCsr": csrPEM(s.t, key)}))
	if status != 201 {
		s.t.Fatalf("register %s: %d %v", name, status, body)
	}
	return body
}

func (s *tenants) bundle(key, device, label string, obf map[string]any) client.Bundle {
	s.t.Helper()
	status, body := s.call(key, "POST", "/api/v1/devices/"+device+"/enrolments", "application/json",
		mustJSON(map[string]any{"proof": map[string]any{"claimCode": label}, "obfId": obf["obfId"]}))
	if status != 201 {
		s.t.Fatalf("bundle for %s: %d %v", device, status, body)
	}
	return client.Bundle{Token: body["token"].(string), AssignedID: body["assignedId"].(string)}
}

func (s *tenants) conn(reg map[string]any, key *ecdsa.PrivateKey) *client.Conn {
	return (&seed{sp: s.sp}).obfConn(reg, key)
}

// acceptedBy says whether a relying party following the README's
// verification guidance (the SP root as the only anchor, the chain the
// peer sends, the purpose) accepts chain[0]: Go's verifier, and openssl
// verify.
func acceptedBy(t *testing.T, anchorPath string, chain []*x509.Certificate, usage x509.ExtKeyUsage) (goOK, opensslOK bool, why string) {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM([]byte(readFile(t, anchorPath)))
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}})
	goOK = err == nil
	dir := t.TempDir()
	var untrusted []byte
	for _, c := range chain[1:] {
		untrusted = append(untrusted, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	if err := os.WriteFile(filepath.Join(dir, "leaf.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: chain[0].Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	purpose := "sslclient"
	if usage == x509.ExtKeyUsageServerAuth {
		purpose = "sslserver"
	}
	args := []string{"verify", "-CAfile", anchorPath, "-purpose", purpose}
	if len(untrusted) > 0 {
		if err := os.WriteFile(filepath.Join(dir, "chain.pem"), untrusted, 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-untrusted", filepath.Join(dir, "chain.pem"))
	}
	out, oerr := exec.Command("openssl", append(args, filepath.Join(dir, "leaf.pem"))...).CombinedOutput()
	opensslOK = oerr == nil && strings.Contains(string(out), ": OK")
	return goOK, opensslOK, fmt.Sprintf("go: %v; openssl: %s", err, strings.TrimSpace(string(out)))
}

// mint signs a certificate naming uri for a fresh key with issuerKey, as
// the holder of that key would with openssl x509 -req.
func mint(t *testing.T, issuer *x509.Certificate, issuerKey *ecdsa.PrivateKey, cn, uri string, dns ...string) *x509.Certificate {
	t.Helper()
	u, _ := url.Parse(uri)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn}, URIs: []*url.URL{u}, DNSNames: dns,
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, &key.PublicKey, issuerKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

// TestNoCrossTenantIdentity: bob's trusted OBS tries every way it has to
// get a certificate that chains to the SP root and names alice's device,
// or to record a credential under alice's device, and a relying party
// following the README (Go's verifier, openssl verify) accepts none of
// what it gets. Before the trusted path became a registration authority,
// bob's OBS was given a sub-CA constrained only by the SP's host and
// minted alice's identity with it (the first step below).
func TestNoCrossTenantIdentity(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatal("openssl is not installed")
	}
	s := newTenants(t)
	ctx := context.Background()
	ba := s.bundle(s.alice, "a-1", "label-a1", s.aliceOBS)
	bb := s.bundle(s.bob, "b-1", "label-b1", s.bobOBS)
	aliceURI := "https://sp.example/" + ba.AssignedID
	bob := s.conn(s.bobOBS, s.bobKey)

	// 1. A sub-CA for bob's OBS, constrained to the SP's host, with which
	// it signs alice's identity.
	subKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	status, reg := s.call(s.admin, "POST", "/api/v1/obfs", "application/json", mustJSON(map[string]any{
		"name": "bob-line-2", "kind": "obs", "trusted": true, "owner": "bob", "clientCsr": csrPEM(t, subKey),
		"subCaCsr": csrPEM(t, subKey), "permittedUriDomains": []string{"sp.example"}}))
	if status == 201 {
		sub := parsePEMCerts(t, reg["subCaCert"].(string))
		forged := mint(t, sub[0], subKey, ba.AssignedID, aliceURI)
		goOK, opensslOK, why := acceptedBy(t, s.anchorPath, append([]*x509.Certificate{forged}, sub...), x509.ExtKeyUsageClientAuth)
		if goOK || opensslOK {
			t.Fatalf("bob's OBS minted alice's device identity %s with its sub-CA, accepted under the SP root (%s)", aliceURI, why)
		}
	} else if errCode(reg) != "sub_ca_retired" {
		t.Fatalf("registering a sub-CA: %d %v, want 400 sub_ca_retired", status, reg)
	}

	// 2. Bob's client certificate as an issuer: it is no CA.
	bobChain := parsePEMCerts(t, s.bobOBS["clientCert"].(string))
	forged := mint(t, bobChain[0], s.bobKey, ba.AssignedID, aliceURI)
	if goOK, opensslOK, why := acceptedBy(t, s.anchorPath, append([]*x509.Certificate{forged}, bobChain...), x509.ExtKeyUsageClientAuth); goOK || opensslOK {
		t.Fatalf("a certificate signed with bob's OBS client key is accepted: %s", why)
	}
	// ... nor a server certificate (it authenticates clients only).
	if goOK, opensslOK, why := acceptedBy(t, s.anchorPath, bobChain, x509.ExtKeyUsageServerAuth); goOK || opensslOK {
		t.Fatalf("bob's OBS client certificate passes as a TLS server certificate: %s", why)
	}

	// 3. Through the SP: every forward naming alice's device is refused
	// and records nothing.
	csrFor := func(cn string, uris ...string) string {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		var us []*url.URL
		for _, u := range uris {
			p, _ := url.Parse(u)
			us = append(us, p)
		}
		der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}, URIs: us}, key)
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	}
	value := make([]byte, 32)
	rand.Read(value)
	for _, c := range []struct {
		name string
		item client.ForwardItem
		code string
	}{
		{"alice's token", client.ForwardItem{Token: ba.Token, AssignedID: ba.AssignedID, CSR: csrFor(ba.AssignedID)}, "token_mismatch"},
		{"alice's assigned ID with bob's token", client.ForwardItem{Token: bb.Token, AssignedID: ba.AssignedID, CSR: csrFor(ba.AssignedID)}, "token_mismatch"},
		{"a CSR asking for alice's URI", client.ForwardItem{Token: bb.Token, AssignedID: bb.AssignedID, CSR: csrFor(bb.AssignedID, aliceURI)}, "csr_san_mismatch"},
		{"a certificate from a sub-CA", client.ForwardItem{Token: bb.Token, AssignedID: bb.AssignedID, Certificate: pemCert(forged)}, "sub_ca_retired"},
		{"a key under a KeID of its choosing", client.ForwardItem{Token: bb.Token, AssignedID: bb.AssignedID, Key: &client.ForwardKey{SUID: 22,
			TargetIDs: []string{"in-cse.sp.example"}, Value: value, KeID: "00112233445566778899aabbccddeeff@sp.example"}}, "key_id_assigned_by_sp"},
		{"a key under a key ID of its choosing", client.ForwardItem{Token: bb.Token, AssignedID: bb.AssignedID, Key: &client.ForwardKey{SUID: 21,
			TargetIDs: []string{"in-cse.sp.example"}, Value: value, KeyID: "0011@sp.example"}}, "key_id_assigned_by_sp"},
		{"a key for ten years", client.ForwardItem{Token: bb.Token, AssignedID: bb.AssignedID, Key: &client.ForwardKey{SUID: 22,
			TargetIDs: []string{"in-cse.sp.example"}, Value: value, NotAfter: time.Now().AddDate(10, 0, 0)}}, "key_lifetime_exceeded"},
	} {
		res, err := bob.Forward(ctx, []client.ForwardItem{c.item})
		if err != nil || len(res) != 1 || res[0].Status != "refused" || res[0].Code != c.code {
			t.Errorf("%s: %v %+v, want refused %s", c.name, err, res, c.code)
		}
	}
	for key, dev := range map[string]string{s.alice: "a-1", s.bob: "b-1"} {
		if status, d := s.call(key, "GET", "/api/v1/devices/"+dev, "", nil); status != 200 || d["state"] == "enrolled" || len(d["credentials"].([]any)) != 0 {
			t.Fatalf("%s after refused forwards: %d %v", dev, status, d)
		}
	}

	// 4. What the OBSes do get names their own devices only, from the
	// SP's issuing CA.
	for _, c := range []struct {
		conn *client.Conn
		b    client.Bundle
	}{{s.conn(s.aliceOBS, s.aliceKey), ba}, {bob, bb}} {
		res, err := c.conn.Forward(ctx, []client.ForwardItem{{Token: c.b.Token, AssignedID: c.b.AssignedID, CSR: csrFor(c.b.AssignedID)}})
		if err != nil || res[0].Status != "recorded" {
			t.Fatalf("forward %s: %v %+v", c.b.AssignedID, err, res)
		}
		chain := parsePEMCerts(t, res[0].Certificate)
		if len(chain[0].URIs) != 1 || chain[0].URIs[0].String() != "https://sp.example/"+c.b.AssignedID || len(chain[0].DNSNames) != 0 || chain[0].IsCA {
			t.Fatalf("certificate for %s names %v %v", c.b.AssignedID, chain[0].URIs, chain[0].DNSNames)
		}
		if goOK, opensslOK, why := acceptedBy(t, s.anchorPath, chain, x509.ExtKeyUsageClientAuth); !goOK || !opensslOK {
			t.Fatalf("the SP's certificate for %s is not accepted: %s", c.b.AssignedID, why)
		}
	}

	// 5. A disabled OBF forwards nothing.
	if status, body := s.call(s.admin, "POST", "/api/v1/obfs/"+s.bobOBS["obfId"].(string)+"/disable", "", nil); status != 200 {
		t.Fatalf("disable: %d %v", status, body)
	}
	bb2 := client.ForwardItem{Token: "any", AssignedID: bb.AssignedID, CSR: csrFor(bb.AssignedID)}
	if _, err := bob.Forward(ctx, []client.ForwardItem{bb2}); !isCode(err, "not_a_trusted_obf") {
		t.Fatalf("forward from a disabled OBF: %v", err)
	}
}

// TestOBFRevocation: everything under the root is the SP's to revoke. An
// OBS's client certificate names the OBF CA's CRL and OCSP responder on
// the plain status listener; disabling the OBS revokes it at once (openssl
// ocsp, openssl verify -crl_check_all with the fetched CRLs, the root's
// for the intermediates included); a certificate the
// OBS had forwarded is revoked for relying parties when the device is
// released; and the OBF CA's CRL fetched while the HSM is away is the last
// good one, not an error.
func TestOBFRevocation(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatal("openssl is not installed")
	}
	statusAddr := freePort(t)
	_, statusPort, _ := net.SplitHostPort(statusAddr)
	// Token keys: with session copies SoftHSM2 would keep signing from
	// memory while its token is away.
	s := newTenants(t, "CREDFACTORY_CA_STATUS_LISTEN="+statusAddr, "CREDFACTORY_CA_STATUS_URL=http://127.0.0.1:"+statusPort,
		"CREDFACTORY_HSM_SESSION_KEYS=false")
	ctx := context.Background()
	dir := t.TempDir()
	file := func(name string) string { return filepath.Join(dir, name) }
	write := func(name string, certs ...*x509.Certificate) {
		if err := os.WriteFile(file(name), ca.EncodeCertsPEM(certs), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	openssl := func(args ...string) (string, error) {
		out, err := exec.Command("openssl", args...).CombinedOutput()
		return string(out), err
	}
	fetchCRL := func(url, name string) *http.Response {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		der, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 {
			if err := os.WriteFile(file(name), pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return resp
	}

	chain := parsePEMCerts(t, s.aliceOBS["clientCert"].(string))
	obsCert, obfCA := chain[0], chain[1]
	if len(obsCert.CRLDistributionPoints) != 1 || !strings.HasSuffix(obsCert.CRLDistributionPoints[0], "/ca/v1/crl/obf.crl") || len(obsCert.OCSPServer) != 1 {
		t.Fatalf("OBS client certificate: CRL %v OCSP %v", obsCert.CRLDistributionPoints, obsCert.OCSPServer)
	}
	write("obs.pem", obsCert)
	write("obfca.pem", obfCA)
	ocsp := func(cert, issuer, url, want string) {
		t.Helper()
		out, err := openssl("ocsp", "-issuer", file(issuer), "-cert", file(cert), "-url", url, "-CAfile", s.anchorPath, "-timeout", "20")
		if err != nil || !strings.Contains(out, "Response verify OK") || !strings.Contains(out, file(cert)+": "+want) {
			t.Fatalf("openssl ocsp %s: want %s: %v\n%s", cert, want, err, out)
		}
	}
	// Every level: the leaf against its issuer's CRL, the intermediate
	// against the root's.
	verifyCRL := func(cert, issuer, crl string) (string, error) {
		return openssl("verify", "-crl_check_all", "-CAfile", s.anchorPath, "-untrusted", file(issuer),
			"-CRLfile", file(crl), "-CRLfile", file("root-crl.pem"), "-purpose", "sslclient", file(cert))
	}
	rootCRL := strings.Replace(obsCert.CRLDistributionPoints[0], "/obf.crl", "/root.crl", 1)
	if resp := fetchCRL(rootCRL, "root-crl.pem"); resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Cache-Control"), "public, max-age=") {
		t.Fatalf("root CRL: %d %v", resp.StatusCode, resp.Header)
	}
	if out, err := openssl("crl", "-in", file("root-crl.pem"), "-CAfile", s.anchorPath, "-noout"); err != nil || !strings.Contains(out, "verify OK") {
		t.Fatalf("root CRL signature: %v\n%s", err, out)
	}

	// Alice's OBS forwards a CSR; the certificate is the issuing CA's.
	ba := s.bundle(s.alice, "a-1", "label-a1", s.aliceOBS)
	res, err := s.conn(s.aliceOBS, s.aliceKey).Forward(ctx, []client.ForwardItem{{Token: ba.Token, AssignedID: ba.AssignedID, CSR: deviceCSR(t, ba.AssignedID)}})
	if err != nil || res[0].Status != "recorded" {
		t.Fatalf("forward: %v %+v", err, res)
	}
	dev := parsePEMCerts(t, res[0].Certificate)
	write("dev.pem", dev[0])
	write("issuing.pem", dev[1])

	ocsp("obs.pem", "obfca.pem", obsCert.OCSPServer[0], "good")
	ocsp("dev.pem", "issuing.pem", dev[0].OCSPServer[0], "good")
	if resp := fetchCRL(obsCert.CRLDistributionPoints[0], "obf-crl.pem"); resp.StatusCode != 200 {
		t.Fatalf("OBF CA CRL: %d", resp.StatusCode)
	}
	if out, err := verifyCRL("obs.pem", "obfca.pem", "obf-crl.pem"); err != nil || !strings.Contains(out, ": OK") {
		t.Fatalf("openssl verify -crl_check_all of the OBS certificate before disabling: %v\n%s", err, out)
	}
	fetchCRL(dev[0].CRLDistributionPoints[0], "issuing-crl.pem")
	if out, err := verifyCRL("dev.pem", "issuing.pem", "issuing-crl.pem"); err != nil || !strings.Contains(out, ": OK") {
		t.Fatalf("openssl verify -crl_check_all of the forwarded certificate: %v\n%s", err, out)
	}

	// Disabled, then the HSM goes away: the OBF CA's CRL is the last good
	// one (stale, so no cache keeps it), never an error; OCSP says
	// tryLater or revoked, never good.
	if status, body := s.call(s.admin, "POST", "/api/v1/obfs/"+s.aliceOBS["obfId"].(string)+"/disable", "", nil); status != 200 {
		t.Fatalf("disable: %d %v", status, body)
	}
	away, back := takeTokenAway(t, s.dir)
	away()
	resp := fetchCRL(obsCert.CRLDistributionPoints[0], "obf-crl-outage.pem")
	if resp.StatusCode != 200 || resp.Header.Get("Cache-Control") != "public, max-age=0" {
		t.Errorf("OBF CA CRL with the HSM away: %d %q, want the last good one with max-age=0", resp.StatusCode, resp.Header.Get("Cache-Control"))
	}
	back()

	// Back: the CRL lists the OBS's certificate, OCSP says revoked.
	var out string
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		fetchCRL(obsCert.CRLDistributionPoints[0], "obf-crl.pem")
		out, err = verifyCRL("obs.pem", "obfca.pem", "obf-crl.pem")
		if strings.Contains(out, "certificate revoked") || time.Now().After(deadline) {
			break
		}
	}
	if err == nil || !strings.Contains(out, "certificate revoked") {
		t.Fatalf("openssl verify -crl_check_all accepts a disabled OBS's certificate: %v\n%s", err, out)
	}
	ocsp("obs.pem", "obfca.pem", obsCert.OCSPServer[0], "revoked")

	// Releasing the device revokes the forwarded certificate for relying
	// parties too.
	if status, body := s.call(s.alice, "POST", "/api/v1/devices/a-1/release", "application/json", []byte(`{"reason":"factory reset"}`)); status != 200 {
		t.Fatalf("release: %d %v", status, body)
	}
	ocsp("dev.pem", "issuing.pem", dev[0].OCSPServer[0], "revoked")
	fetchCRL(dev[0].CRLDistributionPoints[0], "issuing-crl.pem")
	if out, err := verifyCRL("dev.pem", "issuing.pem", "issuing-crl.pem"); err == nil || !strings.Contains(out, "certificate revoked") {
		t.Fatalf("openssl verify -crl_check_all accepts a released device's forwarded certificate: %v\n%s", err, out)
	}
}
