package maf_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/credfactory/credfactory/ca"
	"github.com/credfactory/credfactory/ca/catest"
	"github.com/credfactory/credfactory/clientauth"
	"github.com/credfactory/credfactory/hsm"
	"github.com/credfactory/credfactory/hsm/softhsm/softhsmtest"
	"github.com/credfactory/credfactory/kdf"
	"github.com/credfactory/credfactory/maf"
	"github.com/credfactory/credfactory/server"
	"github.com/credfactory/credfactory/store"
	"github.com/credfactory/credfactory/store/storetest"
)

const (
	masterURI = "pkcs11:object=maf-test-kdf;type=secret-key"
	kekURI    = "pkcs11:object=maf-test-kek;type=secret-key"
)

var (
	module *hsm.Module
	master *hsm.HMACKey
	kek    *hsm.AEADKey
)

// TestMain gives the package a SoftHSM token with a KDF master key and a
// KEK: keys are derived and sealed by the real HSM in every test here.
func TestMain(m *testing.M) {
	os.Exit(softhsmtest.Main(m, "maf-test", masterURI, kekURI, func(tok *softhsmtest.KDFToken) {
		module, master, kek = tok.Module, tok.Master, tok.KEK
	}))
}

// stores runs f on SQLite and on PostgreSQL (when make test provides it).
func stores(t *testing.T, f func(t *testing.T, st *store.Store)) {
	storetest.Each(t, func(t *testing.T, url string) { f(t, openStore(t, url, store.Options{})) })
}

func openStore(t *testing.T, url string, opt store.Options) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), url, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if _, err := st.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return st
}

const (
	mef    = "mef.sp.example"
	target = "in-cse.sp.example"
)

// derivedPSK registers a MEF-derived Kpsa for assigned ID aid, fetchable by
// target, and returns it with the key computed independently.
func derivedPSK(t *testing.T, reg *maf.Registry, aid string, notAfter time.Time) (store.Credential, []byte) {
	t.Helper()
	rel, _ := kdf.NewRelativeID()
	keID := kdf.KeID(rel, mef)
	kctx := kdf.KpsaContext(keID, aid)
	raw, err := kctx.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	kpsaID, err := kdf.KpsaID(fmt.Sprintf("%x", rel), mef)
	if err != nil {
		t.Fatal(err)
	}
	c := store.Credential{
		ID: kdf.CredentialID(kdf.CredentialKpsaID, kpsaID), AssignedID: aid, DeviceID: "dev-" + aid, Tenant: "tenant-1",
		Type: store.TypePSK, SUID: int(kdf.SUIDRSPFSAEF), KeyID: &kpsaID, KeID: &keID, KDFContext: raw,
		TargetIDs: []string{target}, NotBefore: time.Now().Add(-time.Minute), NotAfter: notAfter, Source: store.SourceRSPF,
	}
	if err := reg.Register(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	ke, err := master.Derive(context.Background(), kdf.LabelEnrolmentRoot, []byte(keID))
	if err != nil {
		t.Fatal(err)
	}
	return c, kdf.Kpsa(ke, aid)
}

func TestFetch(t *testing.T) {
	stores(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		reg := maf.New(st, nil, master, kek)
		c, want := derivedPSK(t, reg, "Sdev-1", time.Now().Add(time.Hour))

		got, err := reg.Fetch(ctx, *c.KeID, kdf.SUIDRSPFSAEF, []string{"other", target})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Key, want) || got.Credential.AssignedID != "Sdev-1" {
			t.Fatalf("fetched key %x, want %x", got.Key, want)
		}

		// A key a trusted OBF forwarded: sealed by the HSM's KEK.
		fwdKey := []byte("0123456789abcdef0123456789abcdef")
		fwdKeID := kdf.KeID([]byte("0123456789abcdef"), "obs.factory.example")
		fwdID := "12-fwd@obs.factory.example"
		sealed, err := reg.SealKey(ctx, fwdID, fwdKey)
		if err != nil {
			t.Fatal(err)
		}
		fwd := store.Credential{ID: fwdID, AssignedID: "Sdev-2", DeviceID: "dev-2", Tenant: "tenant-1", Type: store.TypePSK,
			SUID: int(kdf.SUIDRSPFSAEF), KeyID: &fwdID, KeID: &fwdKeID, SealedKey: sealed, TargetIDs: []string{target},
			NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), Source: store.SourceForward}
		if err := reg.Register(ctx, fwd); err != nil {
			t.Fatal(err)
		}
		if got, err := reg.Fetch(ctx, fwdKeID, kdf.SUIDRSPFSAEF, []string{target}); err != nil || !bytes.Equal(got.Key, fwdKey) {
			t.Fatalf("forwarded key: %x, %v", got.Key, err)
		}
		// The database holds neither key.
		for _, id := range []string{c.ID, fwdID} {
			row, err := reg.Get(ctx, store.ByID, id)
			if err != nil {
				t.Fatal(err)
			}
			blob := fmt.Sprintf("%s%s%s", row.KDFContext, row.SealedKey, row.CertDER)
			if bytes.Contains([]byte(blob), want) || bytes.Contains([]byte(blob), fwdKey) {
				t.Fatalf("credential %s stores a usable key", id)
			}
		}
		// A sealed key moved to another row does not open: it is bound to its ID.
		moved := fwd
		moved.ID, moved.KeyID = "12-moved@obs.factory.example", nil
		if _, err := reg.Key(ctx, moved); !errors.Is(err, hsm.ErrOpen) {
			t.Fatalf("moved sealed key: %v, want hsm.ErrOpen", err)
		}

		// The OBF re-registers the key under the same KeID: the superseded
		// row stays as history, and the active one is what the target gets.
		fwdKey2 := []byte("fedcba9876543210fedcba9876543210")
		fwdID2 := "12-fwd2@obs.factory.example"
		sealed2, err := reg.SealKey(ctx, fwdID2, fwdKey2)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := reg.Revoke(ctx, store.Revocation{ID: fwdID, Reason: 4, Actor: "test"}); err != nil {
			t.Fatal(err)
		}
		fwd2 := fwd
		fwd2.ID, fwd2.KeyID, fwd2.SealedKey = fwdID2, &fwdID2, sealed2
		if err := reg.Register(ctx, fwd2); err != nil {
			t.Fatal(err)
		}
		if got, err := reg.Fetch(ctx, fwdKeID, kdf.SUIDRSPFSAEF, []string{target}); err != nil || !bytes.Equal(got.Key, fwdKey2) {
			t.Fatalf("re-registered key: %x, %v; want the active one", got.Key, err)
		}

		// Another device's key under the same KeID (forwarded before the
		// MEF assigned KeIDs, by an OBF that chose it): neither is answered,
		// before or after the first device's key is revoked.
		other := fwd
		otherID := "12-other@obs.factory.example"
		other.ID, other.KeyID, other.AssignedID, other.DeviceID, other.Tenant = otherID, &otherID, "Sdev-9", "dev-9", "tenant-2"
		if other.SealedKey, err = reg.SealKey(ctx, otherID, []byte("another device's key, 32 bytes!")); err != nil {
			t.Fatal(err)
		}
		if err := reg.Register(ctx, other); err != nil {
			t.Fatal(err)
		}
		if got, err := reg.Fetch(ctx, fwdKeID, kdf.SUIDRSPFSAEF, []string{target}); !errors.Is(err, maf.ErrAmbiguousKey) {
			t.Fatalf("a KeID of two devices: %x, %v; want ErrAmbiguousKey", got.Key, err)
		}
		if _, err := reg.Revoke(ctx, store.Revocation{ID: fwdID2, Reason: 4, Actor: "test"}); err != nil {
			t.Fatal(err)
		}
		if got, err := reg.Fetch(ctx, fwdKeID, kdf.SUIDRSPFSAEF, []string{target}); !errors.Is(err, maf.ErrAmbiguousKey) {
			t.Fatalf("a KeID of two devices, the first revoked: %x, %v; want ErrAmbiguousKey", got.Key, err)
		}

		expired, _ := derivedPSK(t, reg, "Sdev-3", time.Now().Add(-time.Second))
		revoked, _ := derivedPSK(t, reg, "Sdev-4", time.Now().Add(time.Hour))
		if _, err := reg.Revoke(ctx, store.Revocation{ID: revoked.ID, Reason: 1, Actor: "test", Tenant: "tenant-1"}); err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name  string
			keID  string
			suid  kdf.SUID
			names []string
			want  error
		}{
			{"unknown key", kdf.KeID(make([]byte, 16), mef), kdf.SUIDRSPFSAEF, []string{target}, maf.ErrUnknownKey},
			{"other usage", *c.KeID, kdf.SUIDRSPFESPrim, []string{target}, maf.ErrUnknownKey},
			{"target not authorised", *c.KeID, kdf.SUIDRSPFSAEF, []string{"mn-cse.sp.example"}, maf.ErrNotAuthorised},
			{"expired", *expired.KeID, kdf.SUIDRSPFSAEF, []string{target}, maf.ErrExpired},
			{"revoked", *revoked.KeID, kdf.SUIDRSPFSAEF, []string{target}, maf.ErrRevoked},
		}
		for _, tc := range tests {
			if _, err := reg.Fetch(ctx, tc.keID, tc.suid, tc.names); !errors.Is(err, tc.want) {
				t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
			}
		}

		ids, err := reg.Deregister(ctx, "Sdev-1", "admin", "tenant-1")
		if err != nil || len(ids) != 1 {
			t.Fatalf("deregister: %v %v", ids, err)
		}
		if _, err := reg.Fetch(ctx, *c.KeID, kdf.SUIDRSPFSAEF, []string{target}); !errors.Is(err, maf.ErrRevoked) {
			t.Fatalf("after deregistration: %v", err)
		}
	})
}

type pki = *catest.PKI

func newPKI(t *testing.T) pki { return catest.New(t) }

func TestAPI(t *testing.T) {
	stores(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		reg := maf.New(st, nil, master, kek)
		// Made two hours ago, so it can also issue a certificate that has
		// lapsed since.
		p := catest.NewAt(t, time.Now().Add(-2*time.Hour))
		cred, key := derivedPSK(t, reg, "Sdev-9", time.Now().Add(time.Hour))

		// The device's own certificate is a credential the registry holds.
		u, _ := url.Parse("https://sp.example/Sdev-9")
		devCert := p.Leaf(t, ca.Request{Profile: ca.ProfileDevice, AssignedID: "Sdev-9", URIs: []*url.URL{u}})
		fp := sha256.Sum256(devCert.Leaf.Raw)
		serial := devCert.Leaf.SerialNumber.Text(16)
		devCred := store.Credential{ID: fmt.Sprintf("33-%x", fp), AssignedID: "Sdev-9", DeviceID: "dev-Sdev-9", Tenant: "tenant-1",
			Type: store.TypeX509, SUID: 42, Serial: &serial, CertSHA256: fp[:], CertDER: devCert.Leaf.Raw,
			NotBefore: devCert.Leaf.NotBefore, NotAfter: devCert.Leaf.NotAfter, Source: store.SourceRSPF}
		if err := reg.Register(ctx, devCred); err != nil {
			t.Fatal(err)
		}
		targetCert := p.Leaf(t, ca.Request{Profile: ca.ProfileOBFClient, AssignedID: target, DNSNames: []string{target}})
		strangerCert := p.Leaf(t, ca.Request{Profile: ca.ProfileOBFClient, AssignedID: "mn-cse.sp.example", DNSNames: []string{"mn-cse.sp.example"}})
		adminCert := p.Leaf(t, ca.Request{Profile: ca.ProfileOBFClient, AssignedID: "ops.sp.example", DNSNames: []string{"ops.sp.example"}})
		foreign := newPKI(t).Leaf(t, ca.Request{Profile: ca.ProfileOBFClient, AssignedID: target, DNSNames: []string{target}})
		lapsed := func() tls.Certificate {
			key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
			issued, err := p.WithClock(t, func() time.Time { return time.Now().Add(-time.Hour) }).Issue(ctx,
				ca.Request{CSR: csr, Profile: ca.ProfileOBFClient, AssignedID: target, DNSNames: []string{target}, Validity: 30 * time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			return tls.Certificate{Certificate: [][]byte{issued.DER, p.Issuing.Raw}, PrivateKey: key, Leaf: issued.Certificate}
		}()

		as, call := startAPI(t, reg, p)
		fetch := "/maf/v1/fetchCredentials/" + *cred.KeID + "/22"

		status, body := call(as(&targetCert), "GET", fetch, "")
		if status != 200 || body["credential"] != base64.StdEncoding.EncodeToString(key) || body["enroleeId"] != "Sdev-9" {
			t.Fatalf("fetch as target: %d %v", status, body)
		}
		for _, tc := range []struct {
			name   string
			client *http.Client
			path   string
			status int
			code   string
		}{
			{"no client certificate", as(nil), fetch, 401, "client_certificate_required"},
			{"certificate of another CA", as(&foreign), fetch, 401, "client_certificate_invalid"},
			{"expired certificate", as(&lapsed), fetch, 401, "client_certificate_expired"},
			{"not a target", as(&strangerCert), fetch, 403, "target_not_authorised"},
			{"bad SUID", as(&targetCert), "/maf/v1/fetchCredentials/" + *cred.KeID + "/99", 400, "bad_suid"},
			{"bad KeID", as(&targetCert), "/maf/v1/fetchCredentials/nothex@x/22", 400, "bad_key_id"},
			{"unknown key", as(&targetCert), "/maf/v1/fetchCredentials/" + kdf.KeID(make([]byte, 16), mef) + "/22", 404, "credential_not_found"},
			{"status hidden from a stranger", as(&strangerCert), "/maf/v1/credentials/" + cred.ID, 404, "credential_not_found"},
			{"list without a filter", as(&adminCert), "/maf/v1/credentials", 400, "missing_filter"},
		} {
			if status, body := call(tc.client, "GET", tc.path, ""); status != tc.status || code(body) != tc.code {
				t.Errorf("%s: %d %v, want %d %s", tc.name, status, body, tc.status, tc.code)
			}
		}

		// The holder (its device certificate) and an admin see the status.
		for name, c := range map[string]*tls.Certificate{"holder": &devCert, "admin": &adminCert, "target": &targetCert} {
			if status, body := call(as(c), "GET", "/maf/v1/credentials/"+cred.ID, ""); status != 200 || body["status"] != "active" || body["credentialId"] != cred.ID {
				t.Errorf("status as %s: %d %v", name, status, body)
			}
		}
		if status, body := call(as(&devCert), "GET", "/maf/v1/credentials?assignedId=Sdev-9", ""); status != 200 || len(body["credentials"].([]any)) != 2 {
			t.Fatalf("list as holder: %d %v", status, body)
		}
		if status, body := call(as(&strangerCert), "GET", "/maf/v1/credentials?assignedId=Sdev-9", ""); status != 200 || len(body["credentials"].([]any)) != 0 {
			t.Fatalf("list as stranger: %d %v", status, body)
		}
		if status, body := call(as(&adminCert), "GET", "/maf/v1/credentials?serial="+serial, ""); status != 200 || len(body["credentials"].([]any)) != 1 {
			t.Fatalf("by serial as admin: %d %v", status, body)
		}

		// Revocation: a target may not, a bad reason is refused, the holder may.
		if status, body := call(as(&targetCert), "POST", "/maf/v1/credentials/"+cred.ID+"/revoke", `{"reason":"keyCompromise"}`); status != 403 {
			t.Fatalf("revoke as target: %d %v", status, body)
		}
		if status, body := call(as(&devCert), "POST", "/maf/v1/credentials/"+cred.ID+"/revoke", `{"reason":"lost it"}`); status != 400 || code(body) != "bad_reason" {
			t.Fatalf("bad reason: %d %v", status, body)
		}
		if status, body := call(as(&devCert), "POST", "/maf/v1/credentials/"+cred.ID+"/revoke", `{"reason":"keyCompromise"}`); status != 200 {
			t.Fatalf("revoke as holder: %d %v", status, body)
		}
		if status, body := call(as(&targetCert), "GET", fetch, ""); status != 410 || code(body) != "credential_revoked" {
			t.Fatalf("fetch after revocation: %d %v", status, body)
		}
		// A revoked client certificate can no longer call at all.
		if _, err := reg.Revoke(ctx, store.Revocation{ID: devCred.ID, Reason: 1, Actor: "test", Tenant: "tenant-1"}); err != nil {
			t.Fatal(err)
		}
		if status, body := call(as(&devCert), "GET", "/maf/v1/credentials/"+cred.ID, ""); status != 401 || code(body) != "client_certificate_revoked" {
			t.Fatalf("revoked client certificate: %d %v", status, body)
		}
	})
}

// TestRevokeDevice: an SP administrator revokes an assigned ID's
// credentials, all or a SUID set, through the MAF API; a revoked shared key
// is no longer returned by key retrieval, and nobody else may do it.
func TestRevokeDevice(t *testing.T) {
	stores(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		reg := maf.New(st, nil, master, kek)
		p := newPKI(t)
		saef, saefKey := derivedPSK(t, reg, "Sdev-8", time.Now().Add(time.Hour))
		saef2, _ := derivedPSK(t, reg, "Sdev-8", time.Now().Add(time.Hour))
		neighbour, _ := derivedPSK(t, reg, "Sdev-8b", time.Now().Add(time.Hour))
		targetCert := p.Leaf(t, ca.Request{Profile: ca.ProfileOBFClient, AssignedID: target, DNSNames: []string{target}})
		adminCert := p.Leaf(t, ca.Request{Profile: ca.ProfileOBFClient, AssignedID: "ops.sp.example", DNSNames: []string{"ops.sp.example"}})
		as, call := startAPI(t, reg, p)
		fetch := func(c store.Credential) string { return "/maf/v1/fetchCredentials/" + *c.KeID + "/22" }

		if status, body := call(as(&targetCert), "GET", fetch(saef), ""); status != 200 || body["credential"] != base64.StdEncoding.EncodeToString(saefKey) {
			t.Fatalf("fetch before revocation: %d %v", status, body)
		}
		for _, tc := range []struct {
			name   string
			client *http.Client
			path   string
			body   string
			status int
			code   string
		}{
			{"not an admin", as(&targetCert), "/maf/v1/devices/Sdev-8/revoke", `{"reason":"keyCompromise"}`, 403, "not_authorised"},
			{"no certificate", as(nil), "/maf/v1/devices/Sdev-8/revoke", `{}`, 401, "client_certificate_required"},
			{"bad reason", as(&adminCert), "/maf/v1/devices/Sdev-8/revoke", `{"reason":"removeFromCRL"}`, 400, "bad_reason"},
			{"bad SUID", as(&adminCert), "/maf/v1/devices/Sdev-8/revoke", `{"suids":[99]}`, 400, "bad_suid"},
			{"unknown assigned ID", as(&adminCert), "/maf/v1/devices/Snobody/revoke", `{}`, 404, "assigned_id_not_found"},
			{"SUIDs on one credential", as(&adminCert), "/maf/v1/credentials/" + saef.ID + "/revoke", `{"suids":[22]}`, 400, "bad_request"},
		} {
			if status, body := call(tc.client, "POST", tc.path, tc.body); status != tc.status || code(body) != tc.code {
				t.Errorf("%s: %d %v, want %d %s", tc.name, status, body, tc.status, tc.code)
			}
		}
		// A SUID set that matches nothing revokes nothing.
		if status, body := call(as(&adminCert), "POST", "/maf/v1/devices/Sdev-8/revoke", `{"reason":"keyCompromise","suids":[42]}`); status != 200 || len(body["revoked"].([]any)) != 0 {
			t.Fatalf("revoke SUID 42: %d %v", status, body)
		}
		if status, _ := call(as(&targetCert), "GET", fetch(saef), ""); status != 200 {
			t.Fatalf("a non-matching SUID set revoked the key: %d", status)
		}
		status, body := call(as(&adminCert), "POST", "/maf/v1/devices/Sdev-8/revoke", `{"reason":"keyCompromise","suids":[22]}`)
		if status != 200 || len(body["revoked"].([]any)) != 2 {
			t.Fatalf("revoke SUID 22 of Sdev-8: %d %v", status, body)
		}
		if status, _ := call(as(&targetCert), "GET", fetch(neighbour), ""); status != 200 {
			t.Fatalf("revoking Sdev-8 touched Sdev-8b's key: %d", status)
		}
		for _, c := range []store.Credential{saef, saef2} {
			if status, body := call(as(&targetCert), "GET", fetch(c), ""); status != 410 || code(body) != "credential_revoked" {
				t.Fatalf("fetch of %s after revocation: %d %v", c.ID, status, body)
			}
			got, _ := reg.Get(ctx, store.ByID, c.ID)
			if got.RevocationReason == nil || *got.RevocationReason != 1 {
				t.Fatalf("%s: reason %v, want keyCompromise (1)", c.ID, got.RevocationReason)
			}
		}
		// Again: idempotent.
		if status, body := call(as(&adminCert), "POST", "/maf/v1/devices/Sdev-8/revoke", `{"reason":"superseded"}`); status != 200 || len(body["revoked"].([]any)) != 0 {
			t.Fatalf("revoking again: %d %v", status, body)
		}
	})
}

type caller func(client *http.Client, method, path, body string) (int, map[string]any)

// startAPI serves the MAF API over real TLS on loopback and returns a client
// factory (one per client certificate) and a JSON call helper.
// serveAPI serves api over TLS on loopback with p's server certificate;
// as makes a client presenting cert (nil: none).
func serveAPI(t *testing.T, api *maf.API, p pki) (base string, as func(cert *tls.Certificate) *http.Client) {
	t.Helper()
	srv := server.New(server.Options{Listen: "127.0.0.1:0", MaxBodyBytes: 1 << 16, TLS: &tls.Config{
		Certificates: []tls.Certificate{p.ServerCert(t)}, ClientAuth: tls.RequestClientCert}})
	srv.Register(api.Routes()...)
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve() }()
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	roots := x509.NewCertPool()
	roots.AddCert(p.Root)
	return "https://localhost:" + strings.Split(srv.Addr().String(), ":")[1], func(cert *tls.Certificate) *http.Client {
		cfg := &tls.Config{RootCAs: roots}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
	}
}

func startAPI(t *testing.T, reg *maf.Registry, p pki) (func(*tls.Certificate) *http.Client, caller) {
	t.Helper()
	base, as := serveAPI(t, maf.NewAPI(reg, clientauth.New([]*x509.Certificate{p.Root}, []*x509.Certificate{p.Issuing}), []string{"ops.sp.example"}), p)
	call := func(client *http.Client, method, path, body string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var out map[string]any
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("%s %s: not JSON: %s", method, path, raw)
		}
		if resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") == "" {
			t.Errorf("%s %s: 503 without Retry-After", method, path)
		}
		return resp.StatusCode, out
	}
	return as, call
}

func code(m map[string]any) string {
	e, _ := m["error"].(map[string]any)
	s, _ := e["code"].(string)
	return s
}

// TestAPIWhileDatabaseIsDown: with PostgreSQL stopped the API answers 503
// with a clear code, and recovers by itself when the server is back.
func TestAPIWhileDatabaseIsDown(t *testing.T) {
	cluster := storetest.PrivateCluster(t)
	st := openStore(t, cluster.URL, store.Options{MaxRetries: 2})
	reg := maf.New(st, nil, master, kek)
	p := newPKI(t)
	cred, _ := derivedPSK(t, reg, "Sdev-down", time.Now().Add(time.Hour))
	targetCert := p.Leaf(t, ca.Request{Profile: ca.ProfileOBFClient, AssignedID: target, DNSNames: []string{target}})
	as, call := startAPI(t, reg, p)
	fetch := "/maf/v1/fetchCredentials/" + *cred.KeID + "/22"

	cluster.Run("down")
	if status, body := call(as(&targetCert), "GET", fetch, ""); status != 503 || code(body) != "registry_unavailable" {
		t.Fatalf("database down: %d %v", status, body)
	}
	cluster.Run("up")
	if status, body := call(as(&targetCert), "GET", fetch, ""); status != 200 {
		t.Fatalf("database back: %d %v", status, body)
	}
}

// TestOBSIssuedCertificateCannotChooseItsNames: a trusted OBS's sub-CA
// chains to the root, and it names its certificates as it likes (URI SANs
// are not bound by a DNS-only constraint, the CN by none). The MAF must not
// take those names: such a certificate is unknown to it unless the registry
// holds it, and then it is its assigned ID only.
func TestOBSIssuedCertificateCannotChooseItsNames(t *testing.T) {
	st := openStore(t, "sqlite://"+t.TempDir()+"/r.db", store.Options{})
	reg := maf.New(st, nil, master, kek)
	p := newPKI(t)
	obfKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	obfCert, err := ca.CreateOBFCA(p.Root, p.RootKey, &obfKey.PublicKey, pkix.Name{CommonName: "obf ca"}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	obfCA, _ := ca.New(ca.Config{Issuer: obfCert, Signer: obfKey, Chain: []*x509.Certificate{obfCert, p.Root}})
	subKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, subKey)
	sub, err := obfCA.Issue(context.Background(), ca.Request{CSR: csr, Profile: ca.ProfileOBFSubCA, AssignedID: "obs-1", PermittedDNSDomains: []string{"line.factory.example"}})
	if err != nil {
		t.Fatal(err)
	}
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	admin, _ := url.Parse("spiffe://sp.example/ops")
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(99), Subject: pkix.Name{CommonName: "ops.sp.example"}, URIs: []*url.URL{admin},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, sub.Certificate, &leafKey.PublicKey, subKey)
	if err != nil {
		t.Fatal(err)
	}
	rogue := tls.Certificate{Certificate: [][]byte{der, sub.DER, obfCert.Raw}, PrivateKey: leafKey}
	cred, _ := derivedPSK(t, reg, "Svictim", time.Now().Add(time.Hour))

	base, as := serveAPI(t, maf.NewAPI(reg, clientauth.New([]*x509.Certificate{p.Root}, []*x509.Certificate{p.Issuing}), []string{admin.String(), "ops.sp.example"}), p)
	resp, err := as(&rogue).Get(base + "/maf/v1/credentials/" + cred.ID)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("an OBS-issued certificate naming an admin got %d, want 401", resp.StatusCode)
	}
}
