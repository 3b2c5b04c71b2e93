package maf_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credfactory/credfactory/apierr"
	"github.com/credfactory/credfactory/clientauth"
	"github.com/credfactory/credfactory/kdf"
	"github.com/credfactory/credfactory/maf"
	"github.com/credfactory/credfactory/server"
	"github.com/credfactory/credfactory/store"
	"github.com/valyala/fasthttp"
)

const mafFQDN = "maf.sp.example"

// regEnv is a MAF with registration enabled, served over real TLS on
// loopback, and three tenants: two stakeholders and the SP's own.
type regEnv struct {
	t     *testing.T
	st    *store.Store
	reg   *maf.Registry
	base  string
	http  *http.Client
	clock atomic.Pointer[time.Time]
}

func newRegEnv(t *testing.T, st *store.Store) *regEnv {
	t.Helper()
	ctx := context.Background()
	e := &regEnv{t: t, st: st, reg: maf.New(st, nil, master, kek)}
	now := time.Now()
	e.clock.Store(&now)
	maf.SetClock(e.reg, func() time.Time { return *e.clock.Load() })
	for _, s := range []store.Stakeholder{
		{ID: "tenant-1", Name: "acme", Role: store.RoleSubscriber},
		{ID: "tenant-2", Name: "rival", Role: store.RoleSubscriber},
		{ID: "sp", Name: "sp", Role: store.RoleSPAdmin},
	} {
		s.PasswordHash, s.CreatedAt = "x", now
		if err := st.CreateStakeholder(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	for fqdn, tenant := range map[string]string{"acme.example": "tenant-1", "rival.example": "tenant-2", "sp.example": "sp"} {
		if err := st.AddAdminFQDN(ctx, fqdn, tenant, "test", now); err != nil {
			t.Fatal(err)
		}
	}
	p := newPKI(t)
	api := maf.NewAPI(e.reg, clientauth.New([]*x509.Certificate{p.Root}, []*x509.Certificate{p.Issuing}), nil)
	api.EnableRegistration(maf.Registrations{MAFFQDN: mafFQDN, Stakeholders: func(*fasthttp.RequestCtx) (maf.Stakeholder, error) {
		return maf.Stakeholder{}, apierr.New(http.StatusUnauthorized, "unauthenticated", "stakeholder routes are tried end to end")
	}})
	srv := server.New(server.Options{Listen: "127.0.0.1:0", MaxBodyBytes: 1 << 20, TLS: &tls.Config{
		Certificates: []tls.Certificate{p.ServerCert(t)}, ClientAuth: tls.RequestClientCert}})
	srv.Register(api.Routes()...)
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve() }()
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	e.base = "https://localhost:" + strings.Split(srv.Addr().String(), ":")[1]
	roots := x509.NewCertPool()
	roots.AddCert(p.Root)
	e.http = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	return e
}

// client registers a client and returns its registration and the header
// value it authenticates with.
func (e *regEnv) client(id, adminFQDN, tenant string) (store.MAFClient, string) {
	e.t.Helper()
	rc, err := e.reg.RegisterClient(context.Background(), maf.ClientRegistration{ClientID: id, AdminFQDN: adminFQDN,
		ExpiresAt: e.now().Add(24 * time.Hour), Tenant: tenant, Actor: "test"}, mafFQDN)
	if err != nil {
		e.t.Fatalf("register %s: %v", id, err)
	}
	return rc.MAFClient, rc.SymmKeyID + ":" + base64.RawURLEncoding.EncodeToString(rc.Secret)
}

func (e *regEnv) now() time.Time { return *e.clock.Load() }

func (e *regEnv) call(auth, method, path string, body []byte) (int, map[string]any) {
	e.t.Helper()
	req, _ := http.NewRequest(method, e.base+path, bytes.NewReader(body))
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	resp, err := e.http.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		e.t.Fatalf("%s %s: %d, not JSON: %.200s", method, path, resp.StatusCode, raw)
	}
	return resp.StatusCode, out
}

// psk registers a MEF-derived Kpsa of tenant's device aid that targets may
// fetch, and returns its KeID and the key computed independently.
func psk(t *testing.T, reg *maf.Registry, tenant, aid string, targets ...string) (string, []byte) {
	t.Helper()
	rel, _ := kdf.NewRelativeID()
	keID := kdf.KeID(rel, mef)
	raw, err := kdf.KpsaContext(keID, aid).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	kpsaID, _ := kdf.KpsaID(fmt.Sprintf("%x", rel), mef)
	c := store.Credential{ID: kdf.CredentialID(kdf.CredentialKpsaID, kpsaID), AssignedID: aid, DeviceID: "dev-" + aid, Tenant: tenant,
		Type: store.TypePSK, SUID: int(kdf.SUIDRSPFSAEF), KeyID: &kpsaID, KeID: &keID, KDFContext: raw, TargetIDs: targets,
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), Source: store.SourceRSPF}
	if err := reg.Register(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	ke, err := master.Derive(context.Background(), kdf.LabelEnrolmentRoot, []byte(keID))
	if err != nil {
		t.Fatal(err)
	}
	return keID, kdf.Kpsa(ke, aid)
}

// TestTargetByFQDNFetches: a Target known only by its FQDN registers with
// the MAF and fetches the keys its tenant's devices name it for, with the
// credential the registration gave it; everything else is refused and
// changes nothing.
func TestTargetByFQDNFetches(t *testing.T) {
	stores(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		e := newRegEnv(t, st)
		_, cse := e.client("in-cse.acme.example", "acme.example", "tenant-1")
		_, gw := e.client("gw.acme.example", "acme.example", "tenant-1")
		_, rival := e.client("in-cse.rival.example", "rival.example", "tenant-2")
		_, spCSE := e.client("in-cse.sp.example", "sp.example", "sp")
		keID, want := psk(t, e.reg, "tenant-1", "Sdev-1", "in-cse.acme.example", "in-cse.sp.example")
		// A rival's device naming acme's Target: that name is acme's
		// registration, not proof that the rival's device trusts acme.
		rivalKeID, _ := psk(t, e.reg, "tenant-2", "Sdev-r", "in-cse.acme.example")
		fetch := func(k string) string { return "/maf/v1/fetchCredentials/" + k + "/22" }

		wrongSecret := strings.SplitN(cse, ":", 2)[0] + ":" + base64.RawURLEncoding.EncodeToString(make([]byte, 32))
		for _, c := range []struct {
			name, auth, path string
			status           int
			code             string
		}{
			{"the Target", cse, fetch(keID), 200, ""},
			{"the SP's Target", spCSE, fetch(keID), 200, ""},
			{"a Target of the tenant the key does not list", gw, fetch(keID), 403, "target_not_authorised"},
			{"another tenant's Target", rival, fetch(keID), 403, "target_not_authorised"},
			{"acme's Target for a rival's key", cse, fetch(rivalKeID), 403, "target_not_authorised"},
			{"a wrong secret", wrongSecret, fetch(keID), 401, "bad_key_credential"},
			{"no secret", strings.SplitN(cse, ":", 2)[0], fetch(keID), 401, "bad_key_credential"},
			{"a secret that is not base64", strings.SplitN(cse, ":", 2)[0] + ":!!", fetch(keID), 401, "bad_key_credential"},
			{"an unknown key ID", "c00@" + mafFQDN + ":" + base64.RawURLEncoding.EncodeToString(make([]byte, 32)), fetch(keID), 401, "bad_key_credential"},
		} {
			status, body := e.call(c.auth, "GET", c.path, nil)
			if status != c.status || code(body) != c.code {
				t.Errorf("%s: %d %v, want %d %s", c.name, status, body, c.status, c.code)
				continue
			}
			if status == 200 && (body["credential"] != base64.StdEncoding.EncodeToString(want) || body["enroleeId"] != "Sdev-1" || body["status"] != "success") {
				t.Errorf("%s: fetched %v, want the device's key", c.name, body)
			}
		}

		// A rival's revoked key answers acme's Target as any other of the
		// rival's keys: not authorised, never "revoked".
		if _, err := e.reg.Deregister(ctx, "Sdev-r", "test", "tenant-2"); err != nil {
			t.Fatal(err)
		}
		if status, body := e.call(cse, "GET", fetch(rivalKeID), nil); status != 403 || code(body) != "target_not_authorised" {
			t.Fatalf("acme's Target on a rival's revoked key: %d %v", status, body)
		}

		// Expired: refused; renewed by its stakeholder: works again.
		cl, err := st.MAFClientBy(ctx, "symm_key_id", strings.SplitN(cse, ":", 2)[0])
		if err != nil {
			t.Fatal(err)
		}
		later := cl.ExpiresAt.Add(time.Second)
		e.clock.Store(&later)
		if status, body := e.call(cse, "GET", fetch(keID), nil); status != 401 || code(body) != "client_registration_expired" {
			t.Fatalf("expired registration: %d %v", status, body)
		}
		now := time.Now()
		e.clock.Store(&now)

		// Its stakeholder disabled: its clients stop at once.
		if err := st.DisableStakeholder(ctx, "tenant-2", "test", now); err != nil {
			t.Fatal(err)
		}
		if status, body := e.call(rival, "GET", "/maf/v1/credentials?assignedId=Sdev-r", nil); status != 401 || code(body) != "stakeholder_disabled" {
			t.Fatalf("a disabled stakeholder's client: %d %v", status, body)
		}

		// De-registered: its credential is dead.
		if _, err := st.DeleteMAFClient(ctx, "tenant-1", cl.ID, "test", now); err != nil {
			t.Fatal(err)
		}
		if status, body := e.call(cse, "GET", fetch(keID), nil); status != 401 || code(body) != "bad_key_credential" {
			t.Fatalf("de-registered client: %d %v", status, body)
		}
		// Another tenant cannot de-register or update acme's clients.
		gwReg, _ := st.MAFClientBy(ctx, "symm_key_id", strings.SplitN(gw, ":", 2)[0])
		if _, err := st.DeleteMAFClient(ctx, "tenant-2", gwReg.ID, "test", now); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("another tenant de-registered acme's client: %v", err)
		}
		if err := st.UpdateMAFClient(ctx, "tenant-2", gwReg.ID, []string{"x"}, nil, "test", now); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("another tenant updated acme's client: %v", err)
		}
	})
}

// TestClientRegistrationScopedByAdminFQDN: a registration naming another
// tenant's adminFQDN, or one nobody owns, is refused and leaves nothing.
func TestClientRegistrationScopedByAdminFQDN(t *testing.T) {
	stores(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		e := newRegEnv(t, st)
		good := maf.ClientRegistration{ClientID: "in-cse.acme.example", AdminFQDN: "acme.example", ExpiresAt: time.Now().Add(time.Hour), Tenant: "tenant-1", Actor: "test"}
		bad := []struct {
			name string
			mod  func(r *maf.ClientRegistration)
			code string
		}{
			{"another tenant's adminFQDN", func(r *maf.ClientRegistration) { r.ClientID, r.AdminFQDN = "in-cse.rival.example", "rival.example" }, ""},
			{"an adminFQDN nobody owns", func(r *maf.ClientRegistration) { r.ClientID, r.AdminFQDN = "in-cse.nobody.example", "nobody.example" }, ""},
			{"a client FQDN outside its adminFQDN", func(r *maf.ClientRegistration) { r.ClientID = "in-cse.rival.example" }, "client_outside_admin_fqdn"},
			{"an absolute CSE-ID outside its adminFQDN", func(r *maf.ClientRegistration) { r.ClientID = "//rival.example/cse-1" }, "client_outside_admin_fqdn"},
			{"a look-alike domain", func(r *maf.ClientRegistration) { r.ClientID = "in-cse.evilacme.example" }, "client_outside_admin_fqdn"},
			{"a client ID that is neither FQDN nor CSE-ID", func(r *maf.ClientRegistration) { r.ClientID = "in cse" }, "bad_client_id"},
			{"an expiration in the past", func(r *maf.ClientRegistration) { r.ExpiresAt = time.Now().Add(-time.Hour) }, "bad_expiration"},
			{"an expiration too far", func(r *maf.ClientRegistration) { r.ExpiresAt = time.Now().Add(maf.MaxClientLifetime + time.Hour) }, "bad_expiration"},
			{"too many labels", func(r *maf.ClientRegistration) { r.Labels = make([]string, 33) }, "bad_labels"},
		}
		for _, c := range bad {
			r := good
			c.mod(&r)
			_, err := e.reg.RegisterClient(ctx, r, mafFQDN)
			var ae *apierr.Error
			switch {
			case c.code == "" && !errors.Is(err, maf.ErrNotOwned):
				t.Errorf("%s: %v, want ErrNotOwned", c.name, err)
			case c.code != "" && (!errors.As(err, &ae) || ae.Code != c.code || ae.Status/100 != 4):
				t.Errorf("%s: %v, want 4xx %s", c.name, err, c.code)
			}
		}
		// Nothing was written: the name is still free.
		if _, err := e.reg.RegisterClient(ctx, good, mafFQDN); err != nil {
			t.Fatalf("the refused attempts left something behind: %v", err)
		}
		if _, err := e.reg.RegisterClient(ctx, good, mafFQDN); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("the same client registered twice: %v", err)
		}
		// A CSE-ID client.
		for _, id := range []string{"acme.example", "//plant.acme.example/cse-2"} {
			if _, err := e.reg.RegisterClient(ctx, maf.ClientRegistration{ClientID: id, AdminFQDN: "ACME.example",
				ExpiresAt: time.Now().Add(time.Hour), Tenant: "tenant-1"}, mafFQDN); err != nil {
				t.Fatalf("client %s under its adminFQDN: %v", id, err)
			}
		}
		if _, err := e.reg.RegisterClient(ctx, maf.ClientRegistration{ClientID: "/cse-7", AdminFQDN: "acme.example",
			ExpiresAt: time.Now().Add(time.Hour), Tenant: "tenant-1"}, mafFQDN); err != nil {
			t.Fatalf("a CSE-ID client: %v", err)
		}
		if err := st.AddAdminFQDN(ctx, "acme.example", "tenant-2", "test", time.Now()); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("the operator gave acme's adminFQDN to another tenant: %v", err)
		}
	})
}

// TestKmAuthenticatesToMAF: the Km a device was provisioned (SUID 21) is a
// credential the MAF accepts; a Kpsa is not, and a de-registered device's
// Km stops working.
func TestKmAuthenticatesToMAF(t *testing.T) {
	stores(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		e := newRegEnv(t, st)
		rel, _ := kdf.NewRelativeID()
		keID := kdf.KeID(rel, mef)
		raw, _ := kdf.KmContext(keID, mafFQDN).Marshal()
		kmID, _ := kdf.KmID(fmt.Sprintf("%x", rel), mafFQDN)
		c := store.Credential{ID: kdf.CredentialID(kdf.CredentialKmID, kmID), AssignedID: "Sdev-km", DeviceID: "dev-km", Tenant: "tenant-1",
			Type: store.TypePSK, SUID: int(kdf.SUIDRSPFMAF), KeyID: &kmID, KeID: &keID, KDFContext: raw, TargetIDs: []string{mafFQDN},
			NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), Source: store.SourceRSPF}
		if err := e.reg.Register(ctx, c); err != nil {
			t.Fatal(err)
		}
		ke, _ := master.Derive(ctx, kdf.LabelEnrolmentRoot, []byte(keID))
		km := kdf.Km(ke, mafFQDN)
		_, kpsa := psk(t, e.reg, "tenant-1", "Sdev-km", "in-cse.acme.example")
		creds, _ := e.reg.List(ctx, "Sdev-km")
		kpsaID := *creds[1].KeyID
		list := "/maf/v1/credentials?assignedId=Sdev-km"
		for _, c := range []struct {
			name, auth string
			status     int
		}{
			{"Km", kmID + ":" + base64.StdEncoding.EncodeToString(km), 200},
			{"Km, its ID upper-cased", strings.ToUpper(kmID) + ":" + base64.StdEncoding.EncodeToString(km), 200},
			{"a wrong Km", kmID + ":" + base64.StdEncoding.EncodeToString(kpsa), 401},
			{"a Kpsa", kpsaID + ":" + base64.StdEncoding.EncodeToString(kpsa), 401},
		} {
			status, body := e.call(c.auth, "GET", list, nil)
			if status != c.status {
				t.Errorf("%s: %d %v, want %d", c.name, status, body, c.status)
			}
			if status == 200 && len(body["credentials"].([]any)) != 2 {
				t.Errorf("%s: the device sees %v, want its two credentials", c.name, body)
			}
		}
		if _, err := e.reg.Deregister(ctx, "Sdev-km", "test", "tenant-1"); err != nil {
			t.Fatal(err)
		}
		if status, body := e.call(kmID+":"+base64.StdEncoding.EncodeToString(km), "GET", list, nil); status != 401 || code(body) != "key_credential_revoked" {
			t.Fatalf("a de-registered device's Km: %d %v", status, body)
		}
	})
}

// TestKeyRegistration: a registered client registers a key for Targets;
// only they (of its tenant) retrieve it, only the registrant changes or
// deletes it, and the registry holds it sealed.
func TestKeyRegistration(t *testing.T) {
	stores(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		e := newRegEnv(t, st)
		ownerReg, owner := e.client("ae-host.acme.example", "acme.example", "tenant-1")
		_, target := e.client("in-cse.acme.example", "acme.example", "tenant-1")
		_, other := e.client("gw.acme.example", "acme.example", "tenant-1")
		_, rival := e.client("in-cse.rival.example", "rival.example", "tenant-2")
		value := bytes.Repeat([]byte{0x5a}, 32)
		exp := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
		reqBody := func(mod func(m map[string]any)) []byte {
			m := map[string]any{"adminFQDN": "acme.example", "suid": 33, "targetIDs": []string{"in-cse.acme.example", "in-cse.rival.example"},
				"labels": []string{"line-3"}, "expirationTime": exp, "key": base64.StdEncoding.EncodeToString(value)}
			if mod != nil {
				mod(m)
			}
			b, _ := json.Marshal(m)
			return b
		}
		refused := []struct {
			name, auth string
			body       []byte
			status     int
			code       string
		}{
			{"another tenant's adminFQDN", owner, reqBody(func(m map[string]any) { m["adminFQDN"] = "rival.example" }), 403, "admin_fqdn_not_owned"},
			{"a SUID the MAF does not distribute", owner, reqBody(func(m map[string]any) { m["suid"] = 22 }), 400, "bad_suid"},
			{"a short key", owner, reqBody(func(m map[string]any) { m["key"] = "AAAA" }), 400, "bad_key"},
			{"no targets", owner, reqBody(func(m map[string]any) { m["targetIDs"] = []string{} }), 400, "bad_target_ids"},
			{"outliving the registration", owner, reqBody(func(m map[string]any) { m["expirationTime"] = time.Now().Add(48 * time.Hour).Format(time.RFC3339) }), 400, "bad_expiration"},
			{"an unknown field", owner, reqBody(func(m map[string]any) { m["owner"] = "x" }), 400, "bad_request"},
			{"not JSON", owner, []byte("{"), 400, "bad_request"},
			{"a huge body", owner, reqBody(func(m map[string]any) { m["labels"] = []string{strings.Repeat("x", 20<<10)} }), 413, ""},
			{"no credential", "", reqBody(nil), 401, "client_certificate_required"},
		}
		for _, c := range refused {
			status, body := e.call(c.auth, "POST", "/maf/v1/keys", c.body)
			if status != c.status || c.code != "" && code(body) != c.code {
				t.Errorf("%s: %d %v, want %d %s", c.name, status, body, c.status, c.code)
			}
		}
		status, reg := e.call(owner, "POST", "/maf/v1/keys", reqBody(nil))
		if status != 201 || reg["key"] != nil || !strings.HasSuffix(reg["keyId"].(string), "@"+mafFQDN) || !strings.HasPrefix(reg["keyId"].(string), reg["relativeKeyId"].(string)+"@") {
			t.Fatalf("register a key: %d %v", status, reg)
		}
		keyPath := "/maf/v1/keys/" + reg["keyId"].(string)
		stored, err := st.MAFKeyByID(ctx, reg["keyId"].(string))
		if err != nil || bytes.Contains(stored.SealedKey, value) || stored.RegistrationID != ownerReg.ID {
			t.Fatalf("stored key %+v, %v: want it sealed and the registrant's", stored, err)
		}

		for _, c := range []struct {
			name, auth string
			status     int
			code       string
		}{
			{"the Target", target, 200, ""},
			{"the registrant", owner, 200, ""},
			{"a client the key does not list", other, 403, "target_not_authorised"},
			{"a listed Target of another tenant", rival, 403, "target_not_authorised"},
		} {
			status, body := e.call(c.auth, "GET", keyPath, nil)
			if status != c.status || code(body) != c.code {
				t.Errorf("retrieve as %s: %d %v", c.name, status, body)
			} else if status == 200 && body["key"] != base64.StdEncoding.EncodeToString(value) {
				t.Errorf("retrieve as %s: key %v", c.name, body["key"])
			}
		}
		// A Target may read, not change or delete.
		if status, body := e.call(target, "PATCH", keyPath, []byte(`{"targetIDs":["in-cse.acme.example","gw.acme.example"]}`)); status != 403 {
			t.Fatalf("the Target changed the key: %d %v", status, body)
		}
		if status, body := e.call(target, "DELETE", keyPath, nil); status != 403 {
			t.Fatalf("the Target deleted the key: %d %v", status, body)
		}
		if status, _ := e.call(other, "GET", keyPath, nil); status != 403 {
			t.Fatal("a refused change let the other client in")
		}
		// The registrant re-targets it.
		if status, body := e.call(owner, "PATCH", keyPath, []byte(`{"targetIDs":["gw.acme.example"],"labels":[]}`)); status != 200 || len(body["targetIDs"].([]any)) != 1 {
			t.Fatalf("update: %d %v", status, body)
		}
		if status, _ := e.call(target, "GET", keyPath, nil); status != 403 {
			t.Fatalf("the dropped Target still reads the key: %d", status)
		}
		if status, _ := e.call(other, "GET", keyPath, nil); status != 200 {
			t.Fatalf("the new Target cannot read the key: %d", status)
		}
		// A key the MAF generates is returned once, at registration.
		status, gen := e.call(owner, "POST", "/maf/v1/keys", reqBody(func(m map[string]any) { delete(m, "key") }))
		if k, _ := base64.StdEncoding.DecodeString(fmt.Sprint(gen["key"])); status != 201 || len(k) != 32 {
			t.Fatalf("a generated key: %d %v", status, gen)
		}
		// De-registration of the key, then of the client with its keys.
		if status, body := e.call(owner, "DELETE", keyPath, nil); status != 200 {
			t.Fatalf("delete: %d %v", status, body)
		}
		if status, body := e.call(owner, "GET", keyPath, nil); status != 404 || code(body) != "key_not_found" {
			t.Fatalf("a deleted key: %d %v", status, body)
		}
		deleted, err := st.DeleteMAFClient(ctx, "tenant-1", ownerReg.ID, "test", time.Now())
		if err != nil || len(deleted) != 1 || deleted[0] != gen["keyId"] {
			t.Fatalf("de-registering the client deleted %v, %v; want its generated key", deleted, err)
		}
		if _, err := st.MAFKeyByID(ctx, gen["keyId"].(string)); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("a de-registered client's key is still there: %v", err)
		}
	})
}
