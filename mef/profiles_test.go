package mef

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/credfactory/credfactory/apierr"
	"github.com/credfactory/credfactory/ca"
	"github.com/credfactory/credfactory/client"
	"github.com/credfactory/credfactory/kdf"
	"github.com/credfactory/credfactory/store"
	"github.com/credfactory/credfactory/store/storetest"
	"github.com/smallstep/pkcs7"
	"github.com/valyala/fasthttp"
)

// token records an enrolment token for a new device with the given
// assigned ID and returns the token.
func (e *renewEnv) token(device, assignedID string) string {
	e.t.Helper()
	token := device + "-token"
	h := sha256.Sum256([]byte(token))
	if _, err := e.st.UpsertDevices(context.Background(), "maker", []store.Device{{ID: device}}, e.now); err != nil {
		e.t.Fatal(err)
	}
	if err := e.st.CreateEnrolment(context.Background(), store.Enrolment{TokenHash: h[:], DeviceID: device, AssignedID: assignedID,
		StakeholderID: "stk", Tenant: "tenant-1", Mode: store.ModeUntrusted, ExpiresAt: e.now.Add(time.Hour), CreatedAt: e.now}); err != nil {
		e.t.Fatal(err)
	}
	return token
}

func uriSAN(t *testing.T, uris ...string) pkix.Extension {
	t.Helper()
	var names []asn1.RawValue
	for _, u := range uris {
		names = append(names, asn1.RawValue{Tag: 6, Class: asn1.ClassContextSpecific, Bytes: []byte(u)})
	}
	v, err := asn1.Marshal(names)
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: oidSAN, Value: v}
}

func sanExt(t *testing.T, names ...asn1.RawValue) pkix.Extension {
	t.Helper()
	v, err := asn1.Marshal(names)
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: oidSAN, Value: v}
}

// TestCSECertificate: a CSE-ID's certificate carries the CSE's public
// domain name and can serve TLS as well as authenticate as a client
// (TS-0003 §10.1.1.7); what a CSE-ID certificate may not be is refused.
func TestCSECertificate(t *testing.T) {
	storetest.Each(t, func(t *testing.T, dbURL string) {
		e := newRenewEnv(t, dbURL)
		ctx := context.Background()
		roots := x509.NewCertPool()
		roots.AddCert(e.pki.Root)
		inters := x509.NewCertPool()
		inters.AddCert(e.pki.Issuing)

		key := newKey()
		dns := asn1.RawValue{Tag: 2, Class: asn1.ClassContextSpecific, Bytes: []byte("cse-1.sp.example")}
		uri := asn1.RawValue{Tag: 6, Class: asn1.ClassContextSpecific, Bytes: []byte("https://sp.example/cse-1")}
		// TS-0003 §10.1.4: the CSR names the identity in subjectAltName.
		csr, err := client.CSR(key, "/cse-1", e.token("cse-dev", "/cse-1"), sanExt(t, dns, uri))
		if err != nil {
			t.Fatal(err)
		}
		res, err := e.m.EnrolCert(ctx, CertRequest{CSR: csr})
		if err != nil {
			t.Fatal(err)
		}
		c := res.Certificate
		if len(c.DNSNames) != 1 || c.DNSNames[0] != "cse-1.sp.example" || len(c.URIs) != 1 || c.URIs[0].String() != "https://sp.example/cse-1" ||
			c.Subject.CommonName != "/cse-1" {
			t.Fatalf("CSE certificate names: DNS %v URIs %v CN %q", c.DNSNames, c.URIs, c.Subject.CommonName)
		}
		for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
			if _, err := c.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, DNSName: "cse-1.sp.example",
				CurrentTime: e.now, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
				t.Errorf("usage %v for cse-1.sp.example: %v", usage, err)
			}
		}
		if cred := e.credential(c); !strings.HasPrefix(cred.ID, "32-") || cred.SUID != int(kdf.SUIDCertSAEF) {
			t.Errorf("recorded as %s SUID %d, want a type-32 credential for SAEF", cred.ID, cred.SUID)
		}

		// Refusals: nothing is spent, the token still works afterwards.
		badTok := e.token("cse-bad", "/cse-2")
		otherDNS := asn1.RawValue{Tag: 2, Class: asn1.ClassContextSpecific, Bytes: []byte("evil.example")}
		for _, tc := range []struct {
			name, id string
			csr      []byte
			status   int
			code     string
		}{
			{"DNS name of another CSE", "/cse-2", mustCSR(t, newKey(), "", badTok, sanExt(t, otherDNS)), 400, "csr_san_mismatch"},
			{"two DNS names", "/cse-2", mustCSR(t, newKey(), "", badTok, sanExt(t,
				asn1.RawValue{Tag: 2, Class: asn1.ClassContextSpecific, Bytes: []byte("cse-2.sp.example")}, otherDNS)), 400, "csr_san_mismatch"},
		} {
			_, err := e.m.EnrolCert(ctx, CertRequest{CSR: tc.csr})
			wantCode(t, tc.name, err, tc.status, tc.code)
		}
		if _, err := e.m.EnrolCert(ctx, CertRequest{CSR: mustCSR(t, newKey(), "", badTok)}); err != nil {
			t.Fatalf("the token after refusals: %v", err)
		}

		// A CSE-ID that is no DNS label has no public domain name: refused
		// before any signature, the token unspent.
		odd := e.token("cse-odd", "/CSE_1")
		_, err = e.m.EnrolCert(ctx, CertRequest{CSR: mustCSR(t, newKey(), "", odd)})
		wantCode(t, "CSE-ID that is no DNS label", err, 400, "cse_id_not_a_domain_label")
		if all, _ := e.st.Credentials(ctx, "/CSE_1"); len(all) != 0 {
			t.Fatalf("a refused CSE enrolment recorded %d credentials", len(all))
		}
	})
}

func mustCSR(t *testing.T, key crypto.Signer, cn, token string, ext ...pkix.Extension) []byte {
	t.Helper()
	der, err := client.CSR(key, cn, token, ext...)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestCertificateSUID: the usage a certificate is for is recorded, chosen
// at enrolment (40-43), kept on renewal; others are refused unspent.
func TestCertificateSUID(t *testing.T) {
	storetest.Each(t, func(t *testing.T, dbURL string) {
		e := newRenewEnv(t, dbURL)
		ctx := context.Background()
		for _, suid := range []kdf.SUID{kdf.SUIDCertMEF, kdf.SUIDCertMAF, kdf.SUIDCertSAEF, kdf.SUIDCertESPrim} {
			dev := fmt.Sprintf("suid%d", suid)
			id := "S" + dev
			res, err := e.m.EnrolCert(ctx, CertRequest{CSR: mustCSR(t, newKey(), "", e.token(dev, id)), SUID: suid})
			if err != nil {
				t.Fatalf("SUID %d: %v", suid, err)
			}
			if c := e.credential(res.Certificate); c.SUID != int(suid) {
				t.Errorf("SUID %d recorded as %d", suid, c.SUID)
			}
		}
		tok := e.token("suid-bad", "Ssuidbad")
		for _, suid := range []kdf.SUID{22, 44, 10} {
			_, err := e.m.EnrolCert(ctx, CertRequest{CSR: mustCSR(t, newKey(), "", tok), SUID: suid})
			wantCode(t, "SUID "+suid.String(), err, 400, "bad_suid")
		}
		res, err := e.m.EnrolCert(ctx, CertRequest{CSR: mustCSR(t, newKey(), "", tok), SUID: kdf.SUIDCertMAF})
		if err != nil {
			t.Fatalf("the token after refused usages: %v", err)
		}
		// Under another usage's EST label a renewal is refused, and the
		// certificate stays current.
		_, err = e.m.reenrolFor(ctx, res.Certificate, csrFor(t, newKey(), ""), kdf.SUIDCertESPrim, false)
		wantCode(t, "renewal under another usage's label", err, 400, "suid_mismatch")
		if c := e.credential(res.Certificate); c.Status != store.StatusActive {
			t.Fatalf("a refused renewal left the certificate %s", c.Status)
		}
		renewed, err := e.m.reenrolFor(ctx, res.Certificate, csrFor(t, newKey(), ""), kdf.SUIDCertMAF, false)
		if err != nil {
			t.Fatal(err)
		}
		if c := e.credential(renewed.Certificate); c.SUID != int(kdf.SUIDCertMAF) {
			t.Errorf("renewal recorded SUID %d, want the renewed certificate's 41", c.SUID)
		}
		for _, tc := range []struct {
			label string
			want  kdf.SUID
			code  string
		}{{"suid-40", 40, ""}, {"suid-43", 43, ""}, {"suid-22", 0, "unknown_est_label"}, {"suid-4x", 0, "unknown_est_label"}, {"ca1", 0, "unknown_est_label"}} {
			got, err := estLabelSUID(tc.label)
			if tc.code != "" {
				wantCode(t, "label "+tc.label, err, 404, tc.code)
			} else if err != nil || got != tc.want {
				t.Errorf("label %s: %v %v", tc.label, got, err)
			}
		}
	})
}

// TestRenewLegacyURI: a certificate issued before device URIs had a scheme
// (//sp.example/<AE-ID>) renews, and the renewal is issued in today's
// form, whether the CSR leaves the SAN out, copies the old one, or names
// the new one.
func TestRenewLegacyURI(t *testing.T) {
	storetest.Each(t, func(t *testing.T, dbURL string) {
		e := newRenewEnv(t, dbURL)
		ctx := context.Background()
		for i, csrSAN := range [][]string{nil, {"//sp.example/Slegacy%d"}, {"https://sp.example/Slegacy%d"}} {
			dev := "legacy" + string(rune('0'+i))
			id := "S" + dev
			old := e.legacyCert(dev, id)
			if old.URIs[0].Scheme != "" {
				t.Fatalf("the legacy certificate has URI %s", old.URIs[0])
			}
			var ext []pkix.Extension
			for _, s := range csrSAN {
				ext = append(ext, uriSAN(t, strings.ReplaceAll(s, "%d", dev[len("legacy"):])))
			}
			r, err := e.m.Reenrol(ctx, old, csrFor(t, newKey(), "", ext...))
			if err != nil {
				t.Fatalf("CSR SAN %v: %v", csrSAN, err)
			}
			if u := r.Certificate.URIs; len(u) != 1 || u[0].String() != "https://sp.example/"+id {
				t.Fatalf("CSR SAN %v: renewed with URIs %v", csrSAN, u)
			}
			if c := e.credential(old); c.Status != store.StatusRevoked {
				t.Errorf("the legacy certificate is %s after renewal, want superseded", c.Status)
			}
		}

		// A CSE-ID's certificate from before the CSE profile (client
		// only, scheme-less URI) renews into it: its public domain name
		// and serverAuth, so the CSE can now serve TLS with it.
		old := e.legacyCert("legacy-cse", "/cse-9")
		r, err := e.m.Reenrol(ctx, old, csrFor(t, newKey(), "/cse-9", uriSAN(t, "//sp.example/cse-9")))
		if err != nil {
			t.Fatal(err)
		}
		c := r.Certificate
		if len(c.DNSNames) != 1 || c.DNSNames[0] != "cse-9.sp.example" || c.URIs[0].String() != "https://sp.example/cse-9" ||
			len(c.ExtKeyUsage) != 2 || c.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
			t.Fatalf("renewed CSE certificate: DNS %v URIs %v EKU %v", c.DNSNames, c.URIs, c.ExtKeyUsage)
		}
		if cred := e.credential(c); !strings.HasPrefix(cred.ID, "32-") {
			t.Errorf("renewed CSE certificate recorded as %s, want a CSE-ID certificate (32)", cred.ID)
		}
	})
}

// legacyCert records a certificate as the MEF issued them before device
// URIs had a scheme: signed by the issuing CA, recorded through the
// registry like any enrolment.
func (e *renewEnv) legacyCert(device, assignedID string) *x509.Certificate {
	e.t.Helper()
	token := e.token(device, assignedID)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: assignedID},
		NotBefore: e.now.Add(-time.Minute), NotAfter: e.now.Add(2 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs: []*url.URL{{Host: "sp.example", Path: "/" + assignedID}}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, e.pki.Issuing, &key.PublicKey, e.pki.IssuingKey)
	if err != nil {
		e.t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	spki := fingerprint(cert.RawSubjectPublicKeyInfo)
	fp := fingerprint(der)
	serialHex := serial.Text(16)
	h := sha256.Sum256([]byte(token))
	if _, err := e.m.reg.Redeem(context.Background(), store.Redemption{TokenHash: h[:], RequestID: "spki:" + hexs(spki),
		Mode: store.ModeUntrusted, Now: e.now, Credential: store.Credential{
			ID: kdf.CredentialID(CertCredentialType(assignedID), hexs(fp)), Type: store.TypeX509, SUID: int(kdf.SUIDCertSAEF),
			Serial: &serialHex, CertSHA256: fp, CertDER: der, PublicKeySHA256: spki,
			NotBefore: cert.NotBefore, NotAfter: cert.NotAfter, Source: store.SourceRSPF}}); err != nil {
		e.t.Fatal(err)
	}
	return cert
}

// TestCSRAttrs: /csrattrs lists exactly the key policy's algorithms (what
// ca.ParseCSRFor accepts) and names the identity when it is known, read
// back by an independent parser (openssl asn1parse).
func TestCSRAttrs(t *testing.T) {
	def, _ := ca.NewKeyPolicy(nil)
	wide, _ := ca.NewKeyPolicy([]string{"ecdsa-p256", "ecdsa-p384", "rsa", "ed25519"})
	m := &MEF{cfg: Config{SPDomain: "sp.example"}}
	cse, err := m.certShape("/cse-1")
	if err != nil {
		t.Fatal(err)
	}
	all := []string{"challengePassword", "prime256v1", "secp384r1", "ecdsa-with-SHA256", "ecdsa-with-SHA384", "rsaEncryption",
		"sha256WithRSAEncryption", "ED25519", "X509v3 Subject Alternative Name", "Extension Request"}
	for _, tc := range []struct {
		name   string
		policy ca.KeyPolicy
		shape  *certShape
		want   []string
		names  []string // in the extensionRequest's subjectAltName
	}{
		{"default policy, anonymous", def, nil, []string{"challengePassword", "prime256v1", "ecdsa-with-SHA256", "X509v3 Subject Alternative Name"}, nil},
		{"every algorithm", wide, nil, []string{"challengePassword", "prime256v1", "secp384r1", "ecdsa-with-SHA256", "ecdsa-with-SHA384", "rsaEncryption", "sha256WithRSAEncryption", "ED25519", "X509v3 Subject Alternative Name"}, nil},
		{"known CSE", def, &cse, []string{"challengePassword", "prime256v1", "ecdsa-with-SHA256", "Extension Request", "X509v3 Subject Alternative Name"},
			[]string{"cse-1.sp.example", "https://sp.example/cse-1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			der, err := csrAttrsFor(tc.policy, tc.shape)
			if err != nil {
				t.Fatal(err)
			}
			f := filepath.Join(t.TempDir(), "attrs.der")
			if err := os.WriteFile(f, der, 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command("openssl", "asn1parse", "-inform", "DER", "-in", f).CombinedOutput()
			if err != nil {
				t.Fatalf("openssl asn1parse: %v\n%s", err, out)
			}
			for _, w := range all {
				if has, want := strings.Contains(string(out), w), slices.Contains(tc.want, w); has != want {
					t.Errorf("%s listed: %v, want %v\n%s", w, has, want, out)
				}
			}
			for _, n := range tc.names {
				if !bytes.Contains(der, []byte(n)) {
					t.Errorf("identity %s not in the attributes", n)
				}
			}
		})
	}
}

// TestESTPending: EST answers an enrolment that waits on something 202
// Accepted with Retry-After (RFC 7030 §4.2.3), and every other refusal with
// its own status.
func TestESTPending(t *testing.T) {
	unavailable := &apierr.Error{Status: 503, Code: "hsm_unavailable", Message: "the HSM is unavailable", RetryAfter: 1}
	for _, tc := range []struct {
		name       string
		err        error
		status     int
		retryAfter string
	}{
		{"HSM or registry unavailable", unavailable, 202, "1"},
		{"registry contention", tokenErr(store.ErrContention), 202, "1"},
		{"rate limited", &apierr.Error{Status: 429, Code: "rate_limited", Message: "slow down", RetryAfter: 3}, 429, "3"},
		{"credential exists", tokenErr(store.ErrConflict), 409, ""},
		{"token redeemed", errTokenRedeemed, 403, ""},
		{"bad CSR", errBadCSR, 400, ""},
	} {
		var ctx fasthttp.RequestCtx
		if err := estError(&ctx, tc.err); err != nil {
			t.Fatal(err)
		}
		if got := ctx.Response.StatusCode(); got != tc.status || string(ctx.Response.Header.Peek("Retry-After")) != tc.retryAfter ||
			!strings.HasPrefix(string(ctx.Response.Body()), apierr.As(tc.err).Code+": ") {
			t.Errorf("%s: %d Retry-After %q body %q, want %d Retry-After %q", tc.name, got, ctx.Response.Header.Peek("Retry-After"),
				ctx.Response.Body(), tc.status, tc.retryAfter)
		}
	}
}

// TestESTAnswerChain: an enrolment answer holds only the issued certificate
// (RFC 7030 §4.2.3), and with mef.est_answer_chain also the issuing chain,
// for clients that build the chain from the answer.
func TestESTAnswerChain(t *testing.T) {
	e := newRenewEnv(t, "sqlite://"+filepath.Join(t.TempDir(), "registry.db"))
	res, err := e.m.EnrolCert(context.Background(), CertRequest{CSR: mustCSR(t, newKey(), "", e.token("chain1", "Schain1"))})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		chain bool
		want  int
	}{{false, 1}, {true, 1 + len(e.m.ca.Chain())}} {
		e.m.cfg.ESTAnswerChain = tc.chain
		var ctx fasthttp.RequestCtx
		if err := e.m.writeIssued(&ctx, res); err != nil {
			t.Fatal(err)
		}
		der, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(string(ctx.Response.Body())), ""))
		if err != nil {
			t.Fatal(err)
		}
		p7, err := pkcs7.Parse(der)
		if err != nil {
			t.Fatal(err)
		}
		if len(p7.Certificates) != tc.want || !p7.Certificates[0].Equal(res.Certificate) {
			t.Fatalf("est_answer_chain=%v: %d certificates, first %v; want %d, the issued one first", tc.chain, len(p7.Certificates), p7.Certificates[0].Subject, tc.want)
		}
	}
}
