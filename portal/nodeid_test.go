package portal_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/credfactory/credfactory/portal"
	"github.com/credfactory/credfactory/store"
)

// TestSetNodeIDOverHTTP binds a Node-ID over the API (real TLS on
// loopback) and keeps every attempt an attacker or a careless client
// would make: another tenant's device, a Node-ID another tenant's device
// holds (409 that names nothing of it), an invalid URN, a huge body, no
// nodeId, a read-only key, a disabled stakeholder's key, a trusted OBF.
// Each answers a clear error and changes nothing.
func TestSetNodeIDOverHTTP(t *testing.T) {
	c := newClaimEnv(t, nil)
	ctx := context.Background()
	p := c.env.portal
	c.upload(t, `[{"deviceId":"n-1"},{"deviceId":"n-2"}]`)
	if n, err := p.HandOver(ctx, c.maker, "bob", []string{"n-1"}); err != nil || n != 1 {
		t.Fatalf("hand-over: %d %v", n, err)
	}
	dave := portal.Principal{Stakeholder: c.env.stakeholder(t, "dave", store.RoleManufacturer, "dave password 12"), Via: "session"}
	if r, _ := portal.JSONRows(strings.NewReader(`[{"deviceId":"n-3"}]`)); r != nil {
		if _, err := p.Upload(ctx, dave, r); err != nil {
			t.Fatal(err)
		}
	}
	key := func(who portal.Principal, scopes ...string) string {
		k, _, err := p.NewAPIKey(ctx, who, "node-id", scopes...)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	bobKey, makerKey, readKey, daveKey := key(c.bob), key(c.maker), key(c.bob, portal.ScopeRead), key(dave)
	if err := c.env.st.DisableStakeholder(ctx, dave.Stakeholder.ID, "sp-admin", time.Now()); err != nil {
		t.Fatal(err)
	}

	roots := x509.NewCertPool()
	roots.AddCert(c.env.root)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	post := func(apiKey, device, body string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, c.env.base+"/api/v1/devices/"+device+"/node-id", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+apiKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	nodeOf := func(ref string, who portal.Principal) string {
		d, err := p.Device(ctx, who, ref)
		if err != nil {
			t.Fatal(err)
		}
		if d.NodeID == nil {
			return ""
		}
		return *d.NodeID
	}

	const imei = "urn:gsma:imei:90420156-025763-0" // the SVN is not part of it
	status, body := post(bobKey, "n-1", `{"nodeId":"URN:GSMA:imei:90420156-025763-0;svn=42"}`)
	var view portal.DeviceView
	if status != http.StatusOK || json.Unmarshal([]byte(body), &view) != nil || view.NodeID != imei || view.DeviceID != "n-1" {
		t.Fatalf("bind: %d %s", status, body)
	}

	huge := `{"nodeId":"urn:example:` + strings.Repeat("a", 8<<10) + `"}`
	for _, tc := range []struct {
		name, key, device, body string
		status                  int
		code                    string
	}{
		{"the Node-ID another tenant's device holds", makerKey, "n-2", `{"nodeId":"` + imei + `"}`, 409, "node_id_taken"},
		{"the same Node-ID in OID form elsewhere", makerKey, "n-2", `{"nodeId":"urn:oid:1.2.3"}`, 0, ""}, // free: binds
		{"another tenant's device", makerKey, "n-1", `{"nodeId":"urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6"}`, 404, "device_not_found"},
		{"a device that does not exist", bobKey, "n-9", `{"nodeId":"urn:oid:1.2.4"}`, 404, "device_not_found"},
		{"a URL, not a URN", bobKey, "n-1", `{"nodeId":"https://sp.example/node-1"}`, 400, "bad_node_id"},
		{"an AE-ID", bobKey, "n-1", `{"nodeId":"Snode1"}`, 400, "bad_node_id"},
		{"a q-component", bobKey, "n-1", `{"nodeId":"urn:example:a?=b"}`, 400, "bad_node_id"},
		{"a broken IMEI", bobKey, "n-1", `{"nodeId":"urn:gsma:imei:1-2-3"}`, 400, "bad_node_id"},
		{"no nodeId", bobKey, "n-1", `{}`, 400, "bad_request"},
		{"an unknown field", bobKey, "n-1", `{"nodeId":"urn:oid:1.2.5","device":"n-2"}`, 400, ""},
		{"a huge body", bobKey, "n-1", huge, 413, ""},
		{"a read-only key", readKey, "n-1", `{"nodeId":"urn:oid:1.2.6"}`, 403, ""},
		{"a disabled stakeholder's key", daveKey, "n-3", `{"nodeId":"urn:oid:1.2.7"}`, 401, ""},
	} {
		status, body := post(tc.key, tc.device, tc.body)
		if tc.status == 0 {
			if status != http.StatusOK {
				t.Fatalf("%s: %d %s", tc.name, status, body)
			}
			continue
		}
		if status != tc.status || !strings.Contains(body, `"error"`) || tc.code != "" && !strings.Contains(body, `"code":"`+tc.code+`"`) {
			t.Errorf("%s: %d %s; want %d %s", tc.name, status, body, tc.status, tc.code)
		}
		if strings.Contains(body, "n-1") || strings.Contains(body, c.bob.Stakeholder.ID) {
			t.Errorf("%s: the answer names another tenant's device or owner: %s", tc.name, body)
		}
	}
	if nodeOf("n-1", c.bob) != imei || nodeOf("n-2", c.maker) != "urn:oid:1.2.3" || nodeOf("n-3", dave) != "" {
		t.Fatalf("a refusal changed something: %q %q %q", nodeOf("n-1", c.bob), nodeOf("n-2", c.maker), nodeOf("n-3", dave))
	}

	// A trusted OBF acts for its stakeholder in enrolment only.
	_, err := p.SetNodeID(ctx, c.bobOBF, "n-1", "urn:oid:1.2.8")
	wantAPIErr(t, "a trusted OBF", err, 403, "forbidden")
	// An open token holds the Node-ID: a change waits for it.
	if err := c.env.st.CreateEnrolment(ctx, store.Enrolment{TokenHash: bytes.Repeat([]byte{7}, 32), DeviceID: "n-1", AssignedID: "Sn1",
		StakeholderID: c.bob.Stakeholder.ID, Tenant: c.bob.Stakeholder.Tenant(), Mode: store.ModeUntrusted,
		ExpiresAt: time.Now().Add(time.Hour), CreatedAt: time.Now()}); err != nil {
		t.Fatalf("token: %v", err)
	}
	_, err = p.SetNodeID(ctx, c.bob, "n-1", "urn:oid:1.2.9")
	wantAPIErr(t, "a change with a token open", err, 409, "node_id_in_use")
	if nodeOf("n-1", c.bob) != imei {
		t.Fatal("a refused change changed the Node-ID")
	}
	// The device's page shows it.
	req, _ := http.NewRequest(http.MethodGet, c.env.base+"/api/v1/devices/n-1", nil)
	req.Header.Set("Authorization", "Bearer "+bobKey)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(b, []byte(`"nodeId":"`+imei+`"`)) {
		t.Fatalf("device view: %s", b)
	}
}

// TestNodeIDPage: the device page shows the Node-ID and binds it with its
// form; a bad Node-ID, a clash, a missing CSRF token and another tenant's
// device are refused on the page as on the API, and change nothing.
func TestNodeIDPage(t *testing.T) {
	c := newClaimEnv(t, nil)
	ctx := context.Background()
	c.upload(t, `[{"deviceId":"p-1"},{"deviceId":"p-2"}]`)
	if n, err := c.env.portal.HandOver(ctx, c.maker, "bob", []string{"p-1"}); err != nil || n != 1 {
		t.Fatalf("hand-over: %d %v", n, err)
	}
	if _, err := c.env.portal.SetNodeID(ctx, c.maker, "p-2", "urn:oid:1.2.3"); err != nil {
		t.Fatal(err)
	}
	b := c.env.client(t)
	tok := b.login("bob", "bob password 12")
	if r := b.get("/devices/p-1"); r.status != 200 || !strings.Contains(r.body, `id="node-id-form"`) || !strings.Contains(r.body, `action="/devices/p-1@`) {
		t.Fatalf("device page: %d %s", r.status, r.body)
	}
	const imei = "urn:gsma:imei:90420156-025763-0"
	for _, tc := range []struct {
		name, device string
		form         url.Values
		status       int
		text         string
	}{
		{"an invalid Node-ID", "p-1", url.Values{"csrf": {tok}, "nodeId": {"not a urn"}}, 400, "neither a URN"},
		{"a Node-ID another tenant's device holds", "p-1", url.Values{"csrf": {tok}, "nodeId": {"1.2.3"}}, 409, "bound to another device"},
		{"no CSRF token", "p-1", url.Values{"nodeId": {imei}}, 403, ""},
		{"another tenant's device", "p-2", url.Values{"csrf": {tok}, "nodeId": {imei}}, 404, ""},
	} {
		r := b.post("/devices/"+tc.device+"/node-id", tc.form)
		if r.status != tc.status || !strings.Contains(r.body, tc.text) || strings.Contains(r.body, "p-2") && tc.device != "p-2" {
			t.Errorf("%s: %d %.400s", tc.name, r.status, r.body)
		}
	}
	if d, _ := c.env.portal.Device(ctx, c.bob, "p-1"); d.NodeID != nil {
		t.Fatalf("a refusal bound %q", *d.NodeID)
	}
	if r := b.post("/devices/p-1/node-id", url.Values{"csrf": {tok}, "nodeId": {imei}}); r.status != http.StatusSeeOther {
		t.Fatalf("bind from the page: %d %s", r.status, r.body)
	}
	if r := b.get("/devices/p-1"); !strings.Contains(r.body, `<dd id="node-id"><code>`+imei+`</code>`) {
		t.Fatalf("device page after binding: %s", r.body)
	}
}
