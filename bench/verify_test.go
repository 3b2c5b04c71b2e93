package bench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/credfactory/credfactory/ca/catest"
	"github.com/credfactory/credfactory/kdf"
	"github.com/smallstep/pkcs7"
)

// TestVerifyChainsRefusesAStranger: a good chain passes and a certificate
// from another CA fails, whether the trust anchor restricts nothing (each
// issuing CA is then checked once and leaves against it) or carries
// constraints that every leaf must meet (each leaf's whole path is then
// checked, and a leaf outside the anchor's name constraints fails).
func TestVerifyChainsRefusesAStranger(t *testing.T) {
	type shape func(*x509.Certificate)
	cert := func(name string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, isCA bool, edit shape) (*x509.Certificate, *ecdsa.PrivateKey) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			BasicConstraintsValid: true, IsCA: isCA, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign}
		if !isCA {
			tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
			tmpl.URIs = []*url.URL{{Scheme: "https", Host: "sp.example", Path: "/S" + name}}
		}
		if edit != nil {
			edit(tmpl)
		}
		if parent == nil {
			parent, parentKey = tmpl, key
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return c, key
	}
	constrained := func(c *x509.Certificate) { c.PermittedURIDomains = []string{"sp.example"} }
	for _, tc := range []struct {
		name          string
		root, issuing shape
		fast          bool
	}{
		{"anchor restricts nothing", nil, nil, true},
		{"issuing CA with URI name constraints", nil, constrained, true},
		{"anchor with an extended key usage", func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth} }, nil, false},
		{"anchor with URI name constraints", constrained, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root, rootKey := cert("root", nil, nil, true, tc.root)
			issuing, issuingKey := cert("issuing", root, rootKey, true, tc.issuing)
			leaf, _ := cert("device", issuing, issuingKey, false, nil)
			stranger, _ := cert("stranger", nil, nil, false, nil)
			// A CA of the same name that the root never signed.
			rogue, rogueKey := cert("issuing", nil, nil, true, nil)
			forged, _ := cert("forged", rogue, rogueKey, false, nil)
			outside, _ := cert("outside", issuing, issuingKey, false, func(c *x509.Certificate) {
				c.URIs = []*url.URL{{Scheme: "https", Host: "elsewhere.example", Path: "/Soutside"}}
			})
			anchor := []*x509.Certificate{root}
			roots := x509.NewCertPool()
			roots.AddCert(root)
			opts := issuersAsAnchors(x509.VerifyOptions{Roots: roots, Intermediates: x509.NewCertPool()}, anchor, []*x509.Certificate{issuing})
			if fast := opts.Intermediates == nil; fast != tc.fast {
				t.Fatalf("issuing CA as the anchor: %v, want %v", fast, tc.fast)
			}
			var l ledger
			l.intermediates(issuing)
			l.cert(leaf.Raw)
			if n, err := l.verifyChains(anchor); err != nil || n != 1 {
				t.Fatalf("a good chain: %d, %v", n, err)
			}
			bad := []*x509.Certificate{stranger, forged}
			if len(root.PermittedURIDomains)+len(issuing.PermittedURIDomains) > 0 {
				bad = append(bad, outside)
			}
			for _, c := range bad {
				var l ledger
				l.intermediates(issuing)
				l.cert(leaf.Raw)
				l.cert(c.Raw)
				if _, err := l.verifyChains(anchor); err == nil {
					t.Fatalf("%s passed", c.Subject.CommonName)
				}
			}
		})
	}
	// A CA below another CA (here one with name constraints) is never
	// taken as an anchor: its leaves' paths are checked whole.
	root, rootKey := cert("root", nil, nil, true, nil)
	mid, midKey := cert("mid", root, rootKey, true, constrained)
	deep, _ := cert("deep", mid, midKey, true, nil)
	roots := x509.NewCertPool()
	roots.AddCert(root)
	inters := x509.NewCertPool()
	inters.AddCert(mid)
	if opts := issuersAsAnchors(x509.VerifyOptions{Roots: roots, Intermediates: inters}, []*x509.Certificate{root}, []*x509.Certificate{mid, deep}); opts.Intermediates == nil {
		t.Fatal("a CA two levels below the anchor was taken as an anchor")
	}
}

// TestReconcile: the registry and what the bench received must agree both
// ways; each disagreement is named.
func TestReconcile(t *testing.T) {
	der, stranger := []byte("a certificate"), []byte("a stranger's certificate")
	fp, sfp := sha256.Sum256(der), sha256.Sum256(stranger)
	certID := kdf.CredentialID(kdf.CredentialDeviceCert, hex.EncodeToString(fp[:]))
	cert := credential{ID: certID, Type: "x509", Status: "active", SHA256: hex.EncodeToString(fp[:])}
	strangerCert := credential{ID: kdf.CredentialID(kdf.CredentialDeviceCert, hex.EncodeToString(sfp[:])), Type: "x509", Status: "active",
		SHA256: hex.EncodeToString(sfp[:])}
	key := credential{ID: "key-1", Type: "psk", Status: "active"}
	revoked := cert
	revoked.Status = "revoked"
	wrongPrint := cert
	wrongPrint.SHA256 = hex.EncodeToString(sfp[:])
	tests := []struct {
		name         string
		certs, keys  bool // what the ledger holds
		creds        [][]credential
		wantDoubles  int
		wantProblems int
	}{
		{"agree", true, true, [][]credential{{cert}, {key}}, 0, 0},
		{"two credentials on a device", true, true, [][]credential{{cert, key}}, 1, 3},
		{"two active certificates on a device", true, false, [][]credential{{cert, strangerCert}}, 1, 2},
		{"an active and a revoked one", true, false, [][]credential{{cert, revoked}}, 1, 2},
		{"revoked only", true, false, [][]credential{{revoked}}, 1, 2},
		{"no credential", true, false, [][]credential{{}}, 1, 2},
		{"registry holds what the bench never got", false, false, [][]credential{{cert}, {key}}, 0, 2},
		{"bench got what the registry lacks", true, true, [][]credential{}, 0, 2},
		{"bench got a certificate the registry lacks", true, false, [][]credential{{strangerCert}}, 0, 2},
		{"an enrolled device the bench never enrolled", true, false, [][]credential{{cert}, {strangerCert}}, 0, 1},
		{"one certificate on two devices", true, false, [][]credential{{cert}, {cert}}, 0, 1},
		{"the registry's fingerprint is not the ID's", true, false, [][]credential{{wrongPrint}}, 0, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l ledger
			if tt.certs {
				l.cert(der)
			}
			if tt.keys {
				l.key("key-1")
			}
			devices := make([]registeredDevice, len(tt.creds))
			for i := range devices {
				devices[i] = registeredDevice{ID: "bench-" + strconv.Itoa(i), Credentials: tt.creds[i]}
			}
			rec := l.reconcile(devices)
			if rec.doubles != tt.wantDoubles || len(rec.problems) != tt.wantProblems {
				t.Errorf("doubles %d, problems %q; want %d doubles, %d problems", rec.doubles, rec.problems, tt.wantDoubles, tt.wantProblems)
			}
		})
	}
	var l ledger
	l.cert(der)
	if rec := l.reconcile([]registeredDevice{{ID: "bench-0", Credentials: []credential{cert}}, {ID: "bench-0", Credentials: []credential{cert}}}); len(rec.problems) == 0 {
		t.Error("a device listed twice passed")
	}
}

// fakeRegistry is the portal as Verify reads it, over real TLS on loopback:
// the device listing with credentials, in pages, and the EST CA
// certificates. A test makes it disagree with what the bench received.
type fakeRegistry struct {
	pki     *catest.PKI
	devices []registeredDevice // in device ID order
	// stuck answers every page with next= the cursor it was given.
	stuck bool
}

func (f *fakeRegistry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	switch req.URL.Path {
	case "/.well-known/est/cacerts":
		der, err := pkcs7.DegenerateCertificate(append(append([]byte{}, f.pki.Issuing.Raw...), f.pki.Root.Raw...))
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.Header().Set("Content-Type", "application/pkcs7-mime; smime-type=certs-only")
		_, _ = w.Write([]byte(base64.StdEncoding.EncodeToString(der)))
	case "/api/v1/devices":
		q := req.URL.Query()
		if req.Header.Get("Authorization") != "Bearer maker-key" || q.Get("include") != "credentials" || q.Get("state") != "enrolled" ||
			q.Get("prefix") != "bench-" {
			http.Error(w, `{"error":{"code":"bad_request","message":"unexpected listing request"}}`, 400)
			return
		}
		limit, _ := strconv.Atoi(q.Get("limit"))
		after, _, _ := strings.Cut(q.Get("after"), "@")
		i := sort.Search(len(f.devices), func(i int) bool { return after == "" || f.devices[i].ID > after })
		page := f.devices[i:min(i+limit, len(f.devices))]
		out := map[string]any{"devices": page}
		if i+limit < len(f.devices) {
			out["next"] = page[len(page)-1].ID + "@maker"
		}
		if f.stuck {
			out["next"] = q.Get("after")
			if q.Get("after") == "" {
				out["next"] = "bench-0000@maker"
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	default:
		http.NotFound(w, req)
	}
}

// TestVerifyAgainstTheRegistry runs Verify against a registry over HTTPS:
// it passes when the registry and the bench agree, and fails, naming the
// disagreement, when they do not. A verification that cannot fail proves
// nothing.
func TestVerifyAgainstTheRegistry(t *testing.T) {
	pki := catest.New(t)
	leaf := func(name string, issuer *x509.Certificate, key *ecdsa.PrivateKey) []byte {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
		tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, &k.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	credOf := func(der []byte, status string) credential {
		fp := sha256.Sum256(der)
		return credential{ID: kdf.CredentialID(kdf.CredentialDeviceCert, hex.EncodeToString(fp[:])), Type: "x509", Status: status,
			SHA256: hex.EncodeToString(fp[:])}
	}
	const n = 1200 // two pages of 1000
	var ders [][]byte
	for i := 0; i < n; i++ {
		ders = append(ders, leaf(fmt.Sprintf("bench-%04d", i), pki.Issuing, pki.IssuingKey))
	}
	agreeing := func() []registeredDevice {
		out := make([]registeredDevice, n)
		for i := range out {
			out[i] = registeredDevice{ID: fmt.Sprintf("bench-%04d", i), Credentials: []credential{credOf(ders[i], "active")}}
		}
		return out
	}
	// Issued by the same CA, but never to the bench.
	alien := leaf("bench-alien", pki.Issuing, pki.IssuingKey)
	strangerCA := catest.New(t)
	stranger := leaf("bench-stranger", strangerCA.Issuing, strangerCA.IssuingKey)

	for _, tc := range []struct {
		name    string
		edit    func(reg *fakeRegistry, received *[][]byte)
		wantErr string // "" passes
	}{
		{"agree", nil, ""},
		{"a device with two active credentials", func(reg *fakeRegistry, _ *[][]byte) {
			reg.devices[1100].Credentials = append(reg.devices[1100].Credentials, credOf(alien, "active"))
		}, "bench-1100 holds 2 credentials, 2 active"},
		{"a credential the bench got that the registry lacks", func(reg *fakeRegistry, _ *[][]byte) {
			reg.devices = append(reg.devices[:1150:1150], reg.devices[1151:]...)
		}, "was handed out but the registry does not hold it"},
		{"a credential the registry shows revoked", func(reg *fakeRegistry, _ *[][]byte) {
			reg.devices[7].Credentials[0].Status = "revoked"
		}, "bench-0007 holds 1 credentials, 0 active"},
		{"an enrolled device the bench never enrolled", func(reg *fakeRegistry, _ *[][]byte) {
			reg.devices = append(reg.devices, registeredDevice{ID: "bench-zz-alien", Credentials: []credential{credOf(alien, "active")}})
		}, "1201 enrolled devices for 1200 successful enrolments"},
		{"a certificate from another CA", func(reg *fakeRegistry, received *[][]byte) {
			reg.devices[0].Credentials = []credential{credOf(stranger, "active")}
			(*received)[0] = stranger
		}, "does not chain to the trust anchor"},
		{"a listing that does not advance", func(reg *fakeRegistry, _ *[][]byte) { reg.stuck = true }, "does not advance"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := &fakeRegistry{pki: pki, devices: agreeing()}
			received := slices.Clone(ders)
			if tc.edit != nil {
				tc.edit(reg, &received)
			}
			srv := httptest.NewUnstartedServer(reg)
			srv.TLS = &tls.Config{Certificates: []tls.Certificate{pki.ServerCert(t)}}
			srv.StartTLS()
			defer srv.Close()
			var out strings.Builder
			r := NewRunner(Target{Base: srv.URL, Anchor: []*x509.Certificate{pki.Root}, ManufacturerKey: "maker-key"}, &out)
			for _, der := range received {
				r.led.cert(der)
			}
			err := r.Verify(context.Background(), []Result{{Path: PathFactory, Enrolments: n}})
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("an agreeing registry failed: %v", err)
			case tc.wantErr == "" && !strings.Contains(out.String(), "verified: 1200 enrolments = 1200 enrolled devices"):
				t.Fatalf("no verification line: %s", out.String())
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("got %v, want an error naming %q", err, tc.wantErr)
			}
		})
	}
}
