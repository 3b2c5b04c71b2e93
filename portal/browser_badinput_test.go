package portal_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/credfactory/credfactory/store"
)

// TestPagesBadInput sends what a careless or hostile browser would to the
// pages over real HTTPS, and checks each gets a clear HTML answer with the
// right status and changes nothing.
func TestPagesBadInput(t *testing.T) {
	env := newPageEnv(t)
	ctx := context.Background()
	maker := env.stakeholder(t, "maker", store.RoleManufacturer, "maker password 1")
	env.stakeholder(t, "rival", store.RoleManufacturer, "rival password 1")
	env.stakeholder(t, "locky", store.RoleManufacturer, "locky password 1")
	const form = "application/x-www-form-urlencoded"

	wantPage := func(what string, r pageResponse, status int, text string) {
		t.Helper()
		if r.status != status || !strings.Contains(r.body, text) {
			t.Errorf("%s: %d, want %d with %q in:\n%s", what, r.status, status, text, r.body)
		}
		if ct := r.header.Get("Content-Type"); r.status != http.StatusSeeOther && ct != "text/html; charset=utf-8" {
			t.Errorf("%s: Content-Type %q, want an HTML page", what, ct)
		}
	}
	wantRedirect := func(what string, r pageResponse, to string) {
		t.Helper()
		if r.status != http.StatusSeeOther || r.header.Get("Location") != to {
			t.Errorf("%s: %d to %q, want 303 to %s", what, r.status, r.header.Get("Location"), to)
		}
	}

	anon := env.client(t)
	{ // security headers
		for _, r := range []pageResponse{anon.get("/login"), anon.get("/devices"), anon.get("/static/portal.css")} {
			for h, want := range map[string]string{
				"Content-Security-Policy": "default-src 'self'; script-src 'none'; img-src 'self' data:; style-src 'self'; form-action 'self'; frame-ancestors 'none'",
				"X-Content-Type-Options":  "nosniff",
				"Referrer-Policy":         "no-referrer",
			} {
				if got := r.header.Get(h); !strings.HasPrefix(got, want) {
					t.Errorf("%d answer: %s = %q, want %q", r.status, h, got, want)
				}
			}
		}
		if r := anon.get("/static/portal.css"); r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/css") {
			t.Errorf("stylesheet: %d %s", r.status, r.header.Get("Content-Type"))
		}
		wantPage("unknown static file", anon.get("/static/nothing.js"), 404, "no such file")
	}

	{ // no session
		wantRedirect("GET /", anon.get("/"), "/devices")
		wantRedirect("GET /devices", anon.get("/devices"), "/login")
		wantRedirect("GET a device", anon.get("/devices/x-1"), "/login")
		wantPage("POST without a session", anon.post("/api-keys", url.Values{"name": {"k"}}), 401, "You are not logged in")
	}

	{ // wrong password
		r := anon.post("/login", url.Values{"name": {"maker"}, "password": {"not it"}})
		wantPage("wrong password", r, 401, "Wrong name or password.")
		if r.header.Get("Set-Cookie") != "" {
			t.Errorf("a failed login set a cookie: %s", r.header.Get("Set-Cookie"))
		}
		wantPage("unknown name", anon.post("/login", url.Values{"name": {"nobody"}, "password": {"x"}}), 401, "Wrong name or password.")
	}

	{ // cross-origin login
		for _, h := range [][]string{
			{"Origin", "https://evil.example"},
			{"Sec-Fetch-Site", "cross-site"},
			{"Origin", "null"}, // an opaque origin with nothing to vouch for it
		} {
			r := anon.post("/login", url.Values{"name": {"maker"}, "password": {"maker password 1"}}, h...)
			wantPage("login with "+strings.Join(h, ": "), r, 403, "posted from another site")
			if r.header.Get("Set-Cookie") != "" {
				t.Errorf("cross-origin login set a cookie")
			}
		}
		// The portal's own form, as Chromium posts it under no-referrer.
		r := anon.post("/login", url.Values{"name": {"maker"}, "password": {"maker password 1"}},
			"Origin", "null", "Sec-Fetch-Site", "same-origin")
		wantRedirect("same-origin login", r, "/devices")
	}

	{ // slowed, never locked out
		c := env.client(t)
		for i := 1; i <= 3; i++ {
			if r := c.post("/login", url.Values{"name": {"locky"}, "password": {fmt.Sprint("guess ", i)}}); r.status != 401 {
				t.Fatalf("failure %d: %d", i, r.status)
			}
		}
		r := c.post("/login", url.Values{"name": {"locky"}, "password": {"locky password 1"}})
		wantPage("right password at once after 3 failures", r, 429, "Too many failed logins: wait")
		secs, err := strconv.Atoi(r.header.Get("Retry-After"))
		if err != nil || secs < 1 || secs > 2 || r.header.Get("Set-Cookie") != "" {
			t.Fatalf("slowed login: Retry-After %q, Set-Cookie %q", r.header.Get("Retry-After"), r.header.Get("Set-Cookie"))
		}
		time.Sleep(time.Duration(secs) * time.Second)
		r = c.post("/login", url.Values{"name": {"locky"}, "password": {"locky password 1"}})
		wantRedirect("right password after the wait", r, "/devices")
	}

	c := env.client(t)
	token := c.login("maker", "maker password 1")

	{ // CSRF
		wantPage("no CSRF token", c.post("/api-keys", url.Values{"name": {"line 1"}}), 403, "CSRF")
		wantPage("wrong CSRF token", c.post("/api-keys", url.Values{"name": {"line 1"}, "csrf": {token + "x"}}), 403, "CSRF")
		wantPage("logout without CSRF", c.post("/logout", nil), 403, "CSRF")
		// The token in the query string counts for nothing, on the pages
		// and on the session-authenticated API: a URL is logged and leaks.
		wantPage("page CSRF token in the query string", c.post("/api-keys?csrf="+url.QueryEscape(token), url.Values{"name": {"line 1"}}), 403, "CSRF")
		{
			req, _ := http.NewRequest("POST", env.base+"/api/v1/api-keys?csrf="+url.QueryEscape(token), strings.NewReader(`{"name":"line 1"}`))
			req.Header.Set("Content-Type", "application/json")
			if r := c.do(req); r.status != 403 || !strings.Contains(r.body, `"code":"csrf"`) {
				t.Fatalf("API CSRF token in the query string: %d %s", r.status, r.body)
			}
		}
		wantPage("enrol without CSRF", c.post("/devices/x-1/enrol", url.Values{"claimCode": {"whatever"}}), 403, "CSRF")
		if keys, err := env.st.APIKeys(ctx, maker.ID); err != nil || len(keys) != 0 {
			t.Fatalf("API keys after refused posts: %v %v", keys, err)
		}
		// The streamed upload: the token must be the form's first part.
		csv := "deviceId,claimCode\ncsrf-1,CODE-123456\n"
		wantPage("upload without a token", c.postMultipart("/upload", pageFormPart{"file", "d.csv", csv}), 403, "CSRF")
		wantPage("upload with the token after the file", c.postMultipart("/upload",
			pageFormPart{"file", "d.csv", csv}, pageFormPart{"csrf", "", token}), 403, "CSRF")
		wantPage("upload with a wrong token", c.postMultipart("/upload",
			pageFormPart{"csrf", "", "nope"}, pageFormPart{"file", "d.csv", csv}), 403, "CSRF")
		if _, err := env.st.Device(ctx, "csrf-1"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("a refused upload stored a device: %v", err)
		}
		// With the token, the same post works.
		r := c.postMultipart("/upload", pageFormPart{"csrf", "", token}, pageFormPart{"file", "d.csv", csv})
		wantPage("upload with the token first", r, 200, `<dd id="accepted">1</dd>`)
		// And a new API key is shown once, never again.
		r = c.post("/api-keys", url.Values{"name": {"line 1"}, "csrf": {token}})
		wantPage("new API key", r, 200, "cfk_")
		key := r.body[strings.Index(r.body, "cfk_"):]
		key = key[:strings.IndexAny(key, "<\n")]
		if r := c.get("/api-keys"); strings.Contains(r.body, key) || !strings.Contains(r.body, "line 1") {
			t.Errorf("the API key list shows the key again, or not its name")
		}
	}

	upload := func(name, body string) pageResponse {
		t.Helper()
		return c.postMultipart("/upload", pageFormPart{"csrf", "", token}, pageFormPart{"format", "", "auto"}, pageFormPart{"file", name, body})
	}

	{ // malformed uploads
		wantPage("wrong CSV header", upload("d.csv", "id,code\nx-1,CODE-123456\n"), 400, "the CSV header must be deviceId,claimCode,deviceCert")
		wantPage("broken CSV quoting", upload("d.csv", "deviceId,claimCode\nq-1,CODE-123456\n\"q-2,CODE\n"), 400, "malformed CSV")
		wantPage("not a JSON array", upload("d.json", `{"deviceId":"j-1"}`), 400, "must be a JSON array")
		wantPage("empty file", upload("d.csv", ""), 400, "no header")
		wantPage("no file chosen", c.postMultipart("/upload", pageFormPart{"csrf", "", token}, pageFormPart{"file", "", ""}), 400, "choose a file")
		wantPage("not multipart", c.post("/upload", url.Values{"csrf": {token}}), 400, "multipart/form-data")
		// Bad rows are reported, escaped, and the good ones stored.
		r := upload("d.csv", "deviceId,claimCode\n<script>alert(1)</script>,CODE-123456\nok-1,CODE-123456\nok-2,123\n")
		wantPage("bad rows", r, 200, `<dd id="rejected-count">2</dd>`)
		if strings.Contains(r.body, "<script>alert") || !strings.Contains(r.body, "&lt;script&gt;alert(1)&lt;/script&gt;") {
			t.Errorf("the rejected device ID is not escaped:\n%s", r.body)
		}
		if !strings.Contains(r.body, "claimCode must be 6 to 128 characters") || !strings.Contains(r.body, `<dd id="inserted">1</dd>`) {
			t.Errorf("report:\n%s", r.body)
		}
		// JSON is detected from the file's first byte, too.
		wantPage("JSON upload", upload("devices.txt", `[{"deviceId":"j-1","claimCode":"JSON-CODE-1"}]`), 200, `<dd id="inserted">1</dd>`)
	}

	// Two devices of maker's with known claim codes.
	if r := upload("e.csv", "deviceId,claimCode\ndev-a,CODE-AAAAAA\ndev-b,CODE-BBBBBB\n"); r.status != 200 {
		t.Fatalf("upload: %d %s", r.status, r.body)
	}
	enrol := func(id string, v url.Values) pageResponse {
		t.Helper()
		v.Set("csrf", token)
		return c.post("/devices/"+id+"/enrol", v)
	}
	noToken := func(id string) {
		t.Helper()
		d, err := env.st.Device(ctx, id)
		es, err2 := env.st.Enrolments(ctx, id)
		if err != nil || err2 != nil || d.State != store.DevicePreEnrolled || len(es) != 0 {
			t.Fatalf("%s: state %s, enrolments %v (%v %v): want nothing issued", id, d.State, es, err, err2)
		}
	}

	{ // claim codes
		wantPage("another device's claim code", enrol("dev-a", url.Values{"claimCode": {"CODE-BBBBBB"}}), 403, "not this device&#39;s claim code")
		noToken("dev-a")
		wantPage("no claim code", enrol("dev-a", url.Values{"claimCode": {""}}), 400, "Enter the claim code")
		wantPage("unknown OBF", enrol("dev-a", url.Values{"claimCode": {"CODE-AAAAAA"}, "obfId": {"0b0b0b0b-0000-4000-8000-000000000000"}}), 404,
			"no such on-boarding function")
		noToken("dev-a")
		wantPage("unknown device", enrol("dev-zzz", url.Values{"claimCode": {"CODE-AAAAAA"}}), 404, "no such device")
		wantPage("right claim code", enrol("dev-a", url.Values{"claimCode": {"CODE-AAAAAA"}}), 200, "Enrolment bundle")
		// Guessing is throttled: past the device's ceiling of 5 wrong
		// codes, the guesser's next wrong code locks the guesser, who is
		// then refused even the right code (the device is not locked for
		// anyone else: cmd/credfactory TestTransferProofOfControl).
		for i := 0; i < 6; i++ {
			enrol("dev-b", url.Values{"claimCode": {fmt.Sprintf("GUESS-%06d", i)}})
		}
		r := enrol("dev-b", url.Values{"claimCode": {"CODE-BBBBBB"}})
		wantPage("claim code after 6 wrong ones", r, 429, "try again later")
		if r.header.Get("Retry-After") == "" {
			t.Error("a locked claim has no Retry-After")
		}
		noToken("dev-b")
	}

	{ // another tenant
		rc := env.client(t)
		rtoken := rc.login("rival", "rival password 1")
		wantPage("another tenant's device", rc.get("/devices/dev-b"), 404, "no such device")
		r := rc.post("/devices/dev-b/enrol", url.Values{"claimCode": {"CODE-BBBBBB"}, "csrf": {rtoken}})
		wantPage("enrol another tenant's device", r, 404, "no such device")
		if r := rc.get("/devices"); strings.Contains(r.body, "dev-a") || !strings.Contains(r.body, "No devices yet.") {
			t.Errorf("rival sees maker's devices:\n%s", r.body)
		}
	}

	{ // expired session
		// A real session row whose time is up.
		cookie := "expired-session-cookie-value"
		h := sha256.Sum256([]byte(cookie))
		past := time.Now().Add(-time.Hour)
		if err := env.st.CreateSession(ctx, store.Session{IDHash: h[:], StakeholderID: maker.ID, CSRF: "old-csrf",
			CreatedAt: past.Add(-time.Hour), ExpiresAt: past}); err != nil {
			t.Fatal(err)
		}
		x := env.client(t)
		withCookie := func(req *http.Request) *http.Request {
			req.AddCookie(&http.Cookie{Name: "cf_session", Value: cookie})
			return req
		}
		req, _ := http.NewRequest("GET", env.base+"/devices", nil)
		wantRedirect("GET with an expired session", x.do(withCookie(req)), "/login?m=expired")
		req, _ = http.NewRequest("POST", env.base+"/api-keys", strings.NewReader("name=k&csrf=old-csrf"))
		req.Header.Set("Content-Type", form)
		wantPage("POST with an expired session", x.do(withCookie(req)), 401, "Log in again")
		if r := x.get("/login?m=expired"); !strings.Contains(r.body, "Your session has ended") {
			t.Errorf("the login page does not say the session ended")
		}
	}

	{ // logout
		lc := env.client(t)
		ltoken := lc.login("maker", "maker password 1")
		u, _ := url.Parse(env.base)
		old := lc.http.Jar.Cookies(u)
		r := lc.post("/logout", url.Values{"csrf": {ltoken}})
		wantRedirect("logout", r, "/login?m=bye")
		if !strings.Contains(r.header.Get("Set-Cookie"), "cf_session=;") {
			t.Errorf("logout did not clear the cookie: %q", r.header.Get("Set-Cookie"))
		}
		wantRedirect("GET after logout", lc.get("/devices"), "/login")
		// The old cookie is dead on the server, not only in the browser.
		req, _ := http.NewRequest("GET", env.base+"/devices", nil)
		for _, ck := range old {
			req.AddCookie(ck)
		}
		wantRedirect("GET with the logged-out cookie", env.client(t).do(req), "/login?m=expired")
	}

	{ // paging
		var b strings.Builder
		b.WriteString("deviceId\n")
		for i := 1; i <= 120; i++ {
			fmt.Fprintf(&b, "page-%03d\n", i)
		}
		if r := upload("p.csv", b.String()); !strings.Contains(r.body, `<dd id="inserted">120</dd>`) {
			t.Fatalf("upload 120: %d %s", r.status, r.body)
		}
		r := c.get("/devices?prefix=page-")
		if n := strings.Count(r.body, `<a href="/devices/page-`); n != 50 || !strings.Contains(r.body, `after=page-050%40`+maker.ID+`" id="next"`) {
			t.Fatalf("page 1: %d devices, next link missing:\n%s", n, r.body)
		}
		// The next link (the last device and its manufacturer) resumes
		// right after it.
		r = c.get("/devices?prefix=page-&state=&after=page-050%40" + maker.ID)
		if n := strings.Count(r.body, `<a href="/devices/page-`); n != 50 || !strings.Contains(r.body, `/devices/page-051@`) ||
			strings.Contains(r.body, `/devices/page-050@`) {
			t.Fatalf("page 2: %d devices:\n%s", n, r.body)
		}
		wantPage("a malformed cursor", c.get("/devices?after=page-050%40bad%20maker"), 400, "after must be")
		r = c.get("/devices?prefix=page-&state=&after=page-100")
		if n := strings.Count(r.body, `<a href="/devices/page-`); n != 20 || strings.Contains(r.body, `id="next"`) ||
			!strings.Contains(r.body, "page-101") || strings.Contains(r.body, "page-100<") {
			t.Fatalf("last page: %d devices:\n%s", n, r.body)
		}
		r = c.get("/devices?state=enrolled")
		wantPage("filter by state", r, 200, "No devices match.")
		wantPage("unknown state", c.get("/devices?state=bogus"), 400, "state must be")
	}
}

// TestPagesOBFsKeysHandOver covers the other page actions over HTTPS: the
// OBF registry (sp-admin registers, owners read), enrolling for a registered
// OBF, API keys (shown once, revoked), and a manufacturer's hand-over.
func TestPagesOBFsKeysHandOver(t *testing.T) {
	env := newPageEnv(t)
	ctx := context.Background()
	env.stakeholder(t, "sp-ops", store.RoleSPAdmin, "admin password 1")
	maker := env.stakeholder(t, "maker", store.RoleManufacturer, "maker password 1")
	env.stakeholder(t, "homeowner", store.RoleSubscriber, "subscriber password 1")

	admin := env.client(t)
	atoken := admin.login("sp-ops", "admin password 1")
	if r := admin.get("/obfs"); r.status != 200 || !strings.Contains(r.body, `id="obf-form"`) || !strings.Contains(r.body, "No on-boarding functions registered.") {
		t.Fatalf("admin OBF page: %d %s", r.status, r.body)
	}
	register := func(v url.Values) pageResponse {
		v.Set("csrf", atoken)
		return admin.post("/obfs", v)
	}
	r := register(url.Values{"name": {"line-3 tablet"}, "kind": {"obd"}, "owner": {"maker"}})
	if r.status != 200 || !strings.Contains(r.body, "Registered line-3 tablet (obd, untrusted).") {
		t.Fatalf("register an untrusted OBD: %d %s", r.status, r.body)
	}
	if r := register(url.Values{"name": {"line-3 server"}, "kind": {"obs"}, "trusted": {"on"}, "owner": {"maker"}}); r.status != 400 ||
		!strings.Contains(r.body, "The OBF was not registered: a trusted OBF needs clientCsr") || !strings.Contains(r.body, `value="line-3 server"`) {
		t.Errorf("trusted OBS without CSRs: %d %s", r.status, r.body)
	}
	if r := register(url.Values{"name": {"x"}, "kind": {"obd"}, "owner": {"nobody"}}); r.status != 404 || !strings.Contains(r.body, "no such stakeholder") {
		t.Errorf("unknown owner: %d %s", r.status, r.body)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	csrPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))
	r = register(url.Values{"name": {"installer phone"}, "kind": {"obd"}, "trusted": {"on"}, "owner": {"maker"}, "clientCsr": {csrPEM}})
	if r.status != 200 || !strings.Contains(r.body, `<pre id="client-cert">-----BEGIN CERTIFICATE-----`) {
		t.Fatalf("register a trusted OBD: %d %s", r.status, r.body)
	}

	c := env.client(t)
	token := c.login("maker", "maker password 1")
	// The owner sees its OBFs, read-only.
	r = c.get("/obfs")
	if !strings.Contains(r.body, "line-3 tablet") || !strings.Contains(r.body, "installer phone") || strings.Contains(r.body, `id="obf-form"`) {
		t.Errorf("maker's OBF page: %s", r.body)
	}
	if r := c.post("/obfs", url.Values{"csrf": {token}, "name": {"mine"}, "kind": {"obd"}, "owner": {"maker"}}); r.status != 403 ||
		!strings.Contains(r.body, "your role may not do this") {
		t.Errorf("maker registers an OBF: %d %s", r.status, r.body)
	}
	obfs, err := env.st.OBFs(ctx, maker.ID)
	if err != nil || len(obfs) != 2 {
		t.Fatalf("OBFs: %v %v", obfs, err)
	}
	ids := map[string]string{}
	for _, o := range obfs {
		ids[o.Name] = o.ID
	}

	// Enrol for each OBF: the bundle names it, and a trusted one gets no
	// MEF URI or trust anchor (it is the MEF itself).
	if r := c.postMultipart("/upload", pageFormPart{"csrf", "", token}, pageFormPart{"file", "d.json",
		`[{"deviceId":"d-1","claimCode":"CODE-111111"},{"deviceId":"d-2","claimCode":"CODE-222222"},{"deviceId":"d-3"}]`}); r.status != 200 {
		t.Fatalf("upload: %d %s", r.status, r.body)
	}
	if r := c.get("/devices/d-1"); !strings.Contains(r.body, ">line-3 tablet (obd, untrusted)</option>") || !strings.Contains(r.body, ">installer phone (obd, trusted)</option>") {
		t.Errorf("the enrol form does not offer the OBFs: %s", r.body)
	}
	r = c.post("/devices/d-1/enrol", url.Values{"csrf": {token}, "claimCode": {"CODE-111111"}, "obfId": {ids["line-3 tablet"]}})
	if r.status != 200 || !strings.Contains(r.body, "the on-boarding function <strong>line-3 tablet</strong>") || !strings.Contains(r.body, `id="bundle-mef-uri"`) {
		t.Errorf("enrol for an untrusted OBF: %d %s", r.status, r.body)
	}
	r = c.post("/devices/d-2/enrol", url.Values{"csrf": {token}, "claimCode": {"CODE-222222"}, "obfId": {ids["installer phone"]}, "assignedIdType": {"cse"}})
	if r.status != 200 || strings.Contains(r.body, `id="bundle-mef-uri"`) || strings.Contains(r.body, "BEGIN CERTIFICATE") ||
		!strings.Contains(r.body, `<code id="bundle-assigned-id">/`) {
		t.Errorf("enrol for a trusted OBF with a CSE-ID: %d %s", r.status, r.body)
	}
	if r := c.get("/devices/d-1"); !strings.Contains(r.body, "<td>line-3 tablet</td>") || !strings.Contains(r.body, `id="open-token"`) {
		t.Errorf("enrolment history does not name the OBF: %s", r.body)
	}
	if r := c.post("/devices/d-3/enrol", url.Values{"csrf": {token}, "claimCode": {"CODE-333333"}}); r.status != 409 || !strings.Contains(r.body, "without a claim code") {
		t.Errorf("device without a claim code: %d %s", r.status, r.body)
	}

	// API keys: shown once, listed by name with scopes and creator,
	// revoked.
	r = c.post("/api-keys", url.Values{"csrf": {token}, "name": {"line 3 robot"}, "scope": {"read", "enrol"}})
	if r.status != 200 || !strings.Contains(r.body, `<pre id="api-key">cfk_`) ||
		!strings.Contains(r.body, `<td class="scopes">read enrol</td>`) || !strings.Contains(r.body, `<td class="created-by">session:maker</td>`) {
		t.Fatalf("new API key: %d %s", r.status, r.body)
	}
	if r := c.post("/api-keys", url.Values{"csrf": {token}, "name": {"bad"}, "scope": {"root"}}); r.status != 400 || !strings.Contains(r.body, "unknown scope") {
		t.Errorf("unknown scope: %d %s", r.status, r.body)
	}
	if r := c.post("/api-keys", url.Values{"csrf": {token}, "name": {"  "}}); r.status != 400 || !strings.Contains(r.body, "No key was made") {
		t.Errorf("blank key name: %d %s", r.status, r.body)
	}
	keys, err := env.st.APIKeys(ctx, maker.ID)
	if err != nil || len(keys) != 1 {
		t.Fatalf("keys: %v %v", keys, err)
	}
	r = c.post("/api-keys/"+keys[0].ID+"/revoke", url.Values{"csrf": {token}})
	if r.status != 303 || r.header.Get("Location") != "/api-keys?revoked=1" {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	if r := c.get("/api-keys?revoked=1"); !strings.Contains(r.body, "The API key is revoked.") || !strings.Contains(r.body, "revoked 20") || strings.Contains(r.body, ">Revoke</button>") {
		t.Errorf("key list after revoking: %s", r.body)
	}
	if r := c.post("/api-keys/no-such-key/revoke", url.Values{"csrf": {token}}); r.status != 404 {
		t.Errorf("revoke an unknown key: %d", r.status)
	}

	// Hand-over: the subscriber then sees the device, the maker no longer.
	if r := c.post("/handovers", url.Values{"csrf": {token}, "subscriber": {"nobody"}, "deviceIds": {"d-3"}}); r.status != 404 ||
		!strings.Contains(r.body, "Nothing was handed over: no such subscriber") || !strings.Contains(r.body, "d-3") {
		t.Errorf("hand over to nobody: %d %s", r.status, r.body)
	}
	r = c.post("/handovers", url.Values{"csrf": {token}, "subscriber": {"homeowner"}, "deviceIds": {"d-3\r\n"}})
	if r.status != 303 || r.header.Get("Location") != "/devices?handedOver=1" {
		t.Fatalf("hand over: %d %s", r.status, r.body)
	}
	if r := c.get("/devices?handedOver=1"); !strings.Contains(r.body, "1 device(s) handed over.") || strings.Contains(r.body, "/devices/d-3") {
		t.Errorf("maker's list after the hand-over: %s", r.body)
	}
	sub := env.client(t)
	sub.login("homeowner", "subscriber password 1")
	// Device links carry the manufacturer's UUID, whose hex may hold "d-1"
	// itself: look for the device's own link text.
	if r := sub.get("/devices"); !strings.Contains(r.body, `">d-3</a>`) || strings.Contains(r.body, `">d-1</a>`) ||
		strings.Contains(r.body, `href="/upload"`) {
		t.Errorf("subscriber's list: %s", r.body)
	}
	if r := sub.get("/upload"); !strings.Contains(r.body, "Only a manufacturer pre-enrols devices.") {
		t.Errorf("subscriber's upload page: %s", r.body)
	}
}
