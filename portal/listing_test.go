package portal_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/credfactory/credfactory/portal"
	"github.com/credfactory/credfactory/store"
)

// listingEnv: two manufacturers with devices of one shared ID, a
// subscriber holding a handed-over device and its installer, a subscriber
// holding none, an sp-admin, each with an API key; credentials registered straight into the
// registry.
type listingEnv struct {
	env                    *pageEnv
	maker, maker2, sub     store.Stakeholder
	keys                   map[string]string // who -> API key
	client                 *http.Client
	makerCreds, shared2IDs []string
}

func newListingEnv(t *testing.T) *listingEnv {
	t.Helper()
	ctx := context.Background()
	env := newPageEnv(t)
	e := &listingEnv{env: env, keys: map[string]string{}, client: env.client(t).http}
	e.maker = env.stakeholder(t, "maker", store.RoleManufacturer, "maker password 1")
	e.maker2 = env.stakeholder(t, "maker2", store.RoleManufacturer, "maker2 password 1")
	e.sub = env.stakeholder(t, "sub", store.RoleSubscriber, "sub password 12")
	installer, err := env.portal.CreateStakeholder(ctx, "installer", store.RoleInstaller, "installer password 1", e.sub.Name)
	if err != nil {
		t.Fatal(err)
	}
	nobody := env.stakeholder(t, "nobody", store.RoleSubscriber, "nobody password 1")
	admin := env.stakeholder(t, "admin", store.RoleSPAdmin, "admin password 12")
	noRead := env.stakeholder(t, "noread", store.RoleManufacturer, "noread password 1")
	gone := env.stakeholder(t, "gone", store.RoleManufacturer, "gone password 12")
	key := func(name string, st store.Stakeholder, scopes ...string) {
		k, _, err := env.portal.NewAPIKey(ctx, portal.Principal{Stakeholder: st, Via: "session"}, name, scopes...)
		if err != nil {
			t.Fatal(err)
		}
		e.keys[name] = k
	}
	key("maker", e.maker)
	key("maker2", e.maker2)
	key("sub", e.sub)
	key("installer", installer)
	key("nobody", nobody)
	key("admin", admin)
	key("noread", noRead, portal.ScopeDevices, portal.ScopeEnrol)
	key("gone", gone)
	if err := env.st.DisableStakeholder(ctx, gone.ID, "test", time.Now()); err != nil {
		t.Fatal(err)
	}

	upload := func(st store.Stakeholder, ids ...string) {
		var rows []string
		for _, id := range ids {
			rows = append(rows, `{"deviceId":"`+id+`"}`)
		}
		r, _ := portal.JSONRows(strings.NewReader("[" + strings.Join(rows, ",") + "]"))
		if rep, err := env.portal.Upload(ctx, portal.Principal{Stakeholder: st, Via: "session"}, r); err != nil || rep.Accepted != len(ids) {
			t.Fatalf("upload: %+v %v", rep, err)
		}
	}
	upload(e.maker, "dev-1", "dev-2", "dev-3", "shared", "handed")
	upload(e.maker2, "shared", "other-2")
	if n, err := env.portal.HandOver(ctx, portal.Principal{Stakeholder: e.maker, Via: "session"}, "sub", []string{"handed"}); err != nil || n != 1 {
		t.Fatalf("hand over: %d %v", n, err)
	}
	// maker's devices: dev-1 two active certificates, dev-2 a revoked
	// one, dev-3 one past its notAfter (not yet swept), shared one; the
	// second maker's shared device one of its own.
	now := time.Now()
	cred := func(deviceKey, tenant string, notBefore, notAfter time.Time) string {
		der := make([]byte, 64)
		rand.Read(der)
		fp := sha256.Sum256(der)
		serial := hex.EncodeToString(der[:16])
		c := store.Credential{ID: "33-" + hex.EncodeToString(fp[:]), AssignedID: "S" + deviceKey, DeviceID: deviceKey, Tenant: tenant,
			Type: store.TypeX509, SUID: 42, Serial: &serial, CertSHA256: fp[:], CertDER: der, PublicKeySHA256: fp[:],
			NotBefore: notBefore, NotAfter: notAfter, Status: store.StatusActive, Source: store.SourceRSPF, CreatedAt: now}
		if err := env.st.RegisterCredential(ctx, c); err != nil {
			t.Fatal(err)
		}
		return c.ID
	}
	year := now.Add(365 * 24 * time.Hour)
	e.makerCreds = []string{
		cred("dev-1", e.maker.ID, now, year), cred("dev-1", e.maker.ID, now, year),
		cred("dev-2", e.maker.ID, now, year), cred("dev-3", e.maker.ID, now.Add(-2*time.Hour), now.Add(-time.Hour)),
		cred("shared", e.maker.ID, now, year),
	}
	if _, err := env.st.Revoke(ctx, store.Revocation{ID: e.makerCreds[2], Reason: 1, At: now, Actor: "test"}); err != nil {
		t.Fatal(err)
	}
	e.shared2IDs = []string{cred(e.maker2.ID+"/shared", e.maker2.ID, now, year)}
	return e
}

type listedDevice struct {
	DeviceID       string `json:"deviceId"`
	ManufacturerID string `json:"manufacturerId"`
	Credentials    []struct {
		ID     string `json:"credentialId"`
		Type   string `json:"type"`
		Status string `json:"status"`
		Serial string `json:"serial"`
		SHA256 string `json:"sha256"`
	} `json:"credentials"`
}

// get calls the API with who's key ("" sends none).
func (e *listingEnv) get(t *testing.T, who, path string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", e.env.base+path, nil)
	if who != "" {
		req.Header.Set("Authorization", "Bearer "+e.keys[who])
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("GET %s: %d, not JSON: %v", path, resp.StatusCode, err)
	}
	return resp.StatusCode, body
}

// list pages through the listing with credentials as who, limit per page.
func (e *listingEnv) list(t *testing.T, who string, limit int) []listedDevice {
	t.Helper()
	var all []listedDevice
	for after, pages := "", 0; ; pages++ {
		if pages > 50 {
			t.Fatal("the listing never ends")
		}
		status, body := e.get(t, who, fmt.Sprintf("/api/v1/devices?include=credentials&limit=%d&after=%s", limit, url.QueryEscape(after)))
		var page struct {
			Devices []listedDevice `json:"devices"`
			Next    string         `json:"next"`
		}
		if err := json.Unmarshal(body, &page); status != 200 || err != nil {
			t.Fatalf("%s lists: %d %s", who, status, body)
		}
		all = append(all, page.Devices...)
		if page.Next == "" {
			return all
		}
		after = page.Next
	}
}

// TestListingWithCredentialsIsScoped: each caller's listing with
// credentials holds exactly the devices it may see (a manufacturer its
// own, not another maker's device of the same ID nor one it handed over; a
// subscriber, and the installer acting for it, what it holds; a subscriber
// holding nothing nothing; an sp-admin all), each with exactly the credentials its device page shows,
// states included, whatever the page size.
func TestListingWithCredentialsIsScoped(t *testing.T) {
	e := newListingEnv(t)
	for _, tc := range []struct {
		who  string
		want []string // deviceId@manufacturer name
	}{
		{"maker", []string{"dev-1@maker", "dev-2@maker", "dev-3@maker", "shared@maker"}},
		{"maker2", []string{"other-2@maker2", "shared@maker2"}},
		{"sub", []string{"handed@maker"}},
		{"installer", []string{"handed@maker"}}, // acts for sub
		{"nobody", nil},
		{"admin", []string{"dev-1@maker", "dev-2@maker", "dev-3@maker", "handed@maker", "other-2@maker2", "shared@maker", "shared@maker2"}},
	} {
		for _, limit := range []int{1, 2, 1000} {
			t.Run(fmt.Sprintf("%s/limit %d", tc.who, limit), func(t *testing.T) {
				names := map[string]string{e.maker.ID: "maker", e.maker2.ID: "maker2"}
				var got []string
				for _, d := range e.list(t, tc.who, limit) {
					got = append(got, d.DeviceID+"@"+names[d.ManufacturerID])
					// The device page is the oracle for each device's credentials.
					status, body := e.get(t, tc.who, "/api/v1/devices/"+d.DeviceID+"@"+d.ManufacturerID)
					var page listedDevice
					if err := json.Unmarshal(body, &page); status != 200 || err != nil {
						t.Fatalf("device page %s: %d %s", d.DeviceID, status, body)
					}
					if fmt.Sprint(d.Credentials) != fmt.Sprint(page.Credentials) {
						t.Errorf("%s: listed %+v, the device page shows %+v", d.DeviceID, d.Credentials, page.Credentials)
					}
				}
				slices.Sort(got)
				if !slices.Equal(got, tc.want) {
					t.Errorf("%s sees %v, want %v", tc.who, got, tc.want)
				}
			})
		}
	}

	// What the maker's listing says of each credential.
	states := map[string]string{}
	for _, d := range e.list(t, "maker", 1000) {
		for _, c := range d.Credentials {
			if c.Type != "x509" || len(c.SHA256) != 64 || c.Serial == "" || !strings.HasSuffix(c.ID, c.SHA256) {
				t.Errorf("%s: credential %+v lacks what a reconciliation matches on", d.DeviceID, c)
			}
			states[d.DeviceID] += c.Status + " "
		}
	}
	want := map[string]string{"dev-1": "active active ", "dev-2": "revoked ", "dev-3": "expired ", "shared": "active "}
	if fmt.Sprint(states) != fmt.Sprint(want) {
		t.Errorf("credential states %v, want %v", states, want)
	}
	for _, d := range e.list(t, "maker2", 1000) {
		for _, c := range d.Credentials {
			if slices.Contains(e.makerCreds, c.ID) {
				t.Errorf("maker2 sees maker's credential %s on %s", c.ID, d.DeviceID)
			}
		}
	}
}

// TestListingRefusals: whoever may not list is refused before anything is
// read, and a malformed request is a 400 that says which parameter is
// wrong, never a quietly different page.
func TestListingRefusals(t *testing.T) {
	e := newListingEnv(t)
	for _, tc := range []struct {
		name, who, query string
		status           int
		code             string
	}{
		{"no credentials", "", "include=credentials", 401, "unauthenticated"},
		{"a disabled manufacturer", "gone", "include=credentials", 401, "stakeholder_disabled"},
		{"a key without the read scope", "noread", "include=credentials", 403, "scope_missing"},
		{"a huge limit", "maker", "include=credentials&limit=1000000", 400, "bad_limit"},
		{"one over the page", "maker", "include=credentials&limit=1001", 400, "bad_limit"},
		{"a zero limit", "maker", "include=credentials&limit=0", 400, "bad_limit"},
		{"a negative limit", "maker", "limit=-5", 400, "bad_limit"},
		{"a limit that is no number", "maker", "include=credentials&limit=ten", 400, "bad_limit"},
		{"a fractional limit", "maker", "limit=1.5", 400, "bad_limit"},
		{"an unknown include", "maker", "include=audit", 400, "bad_include"},
		{"an unknown state", "maker", "include=credentials&state=bogus", 400, "bad_filter"},
		{"a cursor that is no device ID", "maker", "include=credentials&after=" + url.QueryEscape("dev 1"), 400, "bad_cursor"},
		{"a cursor with a bad manufacturer", "maker", "include=credentials&after=" + url.QueryEscape("dev-1@m a"), 400, "bad_cursor"},
		{"a cursor with two @", "maker", "include=credentials&after=" + url.QueryEscape("dev-1@m@n"), 400, "bad_cursor"},
		{"an empty manufacturer", "maker", "after=" + url.QueryEscape("dev-1@"), 400, "bad_cursor"},
		{"a cursor too long", "maker", "include=credentials&after=" + strings.Repeat("a", 129), 400, "bad_cursor"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := e.get(t, tc.who, "/api/v1/devices?"+tc.query)
			var out struct {
				Error struct{ Code, Message string } `json:"error"`
			}
			_ = json.Unmarshal(body, &out)
			if status != tc.status || out.Error.Code != tc.code || out.Error.Message == "" {
				t.Fatalf("%d %s, want %d %s", status, body, tc.status, tc.code)
			}
		})
	}
	// Another tenant's cursor reveals nothing: maker2's device as the
	// cursor is only a position in maker's own listing.
	status, body := e.get(t, "maker", "/api/v1/devices?include=credentials&after="+url.QueryEscape("other-2@"+e.maker2.ID))
	if status != 200 || !strings.Contains(string(body), `"deviceId":"shared"`) || strings.Contains(string(body), "other-2") ||
		strings.Contains(string(body), e.shared2IDs[0]) {
		t.Fatalf("maker resumes at maker2's device: %d %s", status, body)
	}
}
