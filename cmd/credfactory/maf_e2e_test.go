package main

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/credfactory/credfactory/client"
)

// TestMAFRegistration: a stakeholder registers its Target, known only by
// its FQDN, under an adminFQDN the operator gave its tenant; the Target
// fetches the key a device was provisioned for it with the credential the
// registration returned; a device authenticates to the MAF with its Km.
// Every refusal is tried as an attacker would and changes nothing.
func TestMAFRegistration(t *testing.T) {
	onBothBackends(t, func(t *testing.T, _ string, env []string) {
		s := newSeed(t, env...)
		acme := strings.TrimSpace(s.cli("admin", "create-api-key", "--stakeholder", "acme"))
		s.cli("admin", "add-admin-fqdn", "--stakeholder", "alice", "--fqdn", "Alice.example")
		s.cli("admin", "add-admin-fqdn", "--stakeholder", "acme", "--fqdn", "acme.example")
		exp := time.Now().Add(24 * time.Hour).UTC().Format(time.RFC3339)
		register := func(key, fqdn, admin string) (int, map[string]any) {
			return s.call(key, "POST", "/maf/v1/clients", "application/json",
				mustJSON(map[string]any{"fqdn": fqdn, "adminFQDN": admin, "labels": []string{"line-1"}, "expirationTime": exp}))
		}
		readOnly := strings.TrimSpace(s.cli("admin", "create-api-key", "--stakeholder", "alice", "--scope", "read"))
		for _, c := range []struct {
			name, key, body string
			status          int
			code            string
		}{
			{"another tenant's adminFQDN", s.alice, `{"fqdn":"in-cse.acme.example","adminFQDN":"acme.example","expirationTime":"` + exp + `"}`, 403, "admin_fqdn_not_owned"},
			{"a Target outside the adminFQDN", s.alice, `{"fqdn":"in-cse.acme.example","adminFQDN":"alice.example","expirationTime":"` + exp + `"}`, 403, "client_outside_admin_fqdn"},
			{"a key without the maf scope", readOnly, `{"fqdn":"in-cse.alice.example","adminFQDN":"alice.example","expirationTime":"` + exp + `"}`, 403, "scope_missing"},
			{"no key", "", `{"fqdn":"in-cse.alice.example","adminFQDN":"alice.example","expirationTime":"` + exp + `"}`, 401, "unauthenticated"},
			{"both an FQDN and a CSE-ID", s.alice, `{"fqdn":"in-cse.alice.example","cseId":"/cse-1","adminFQDN":"alice.example","expirationTime":"` + exp + `"}`, 400, "bad_client_id"},
			{"malformed JSON", s.alice, `{"fqdn":`, 400, "bad_request"},
			{"a huge body", s.alice, `{"fqdn":"in-cse.alice.example","labels":["` + strings.Repeat("x", 64<<10) + `"]}`, 413, ""},
		} {
			status, body := s.call(c.key, "POST", "/maf/v1/clients", "application/json", []byte(c.body))
			if status != c.status || c.code != "" && errCode(body) != c.code {
				t.Errorf("%s: %d %v, want %d %s", c.name, status, body, c.status, c.code)
			}
		}
		// None of them wrote anything: the name is free.
		status, cse := register(s.alice, "in-cse.alice.example", "alice.example")
		if status != 201 || cse["clientId"] != "in-cse.alice.example" || cse["adminFQDN"] != "alice.example" ||
			!strings.HasSuffix(cse["assignedSymmKeyID"].(string), "@sp.example") || cse["credential"] == "" {
			t.Fatalf("register the Target: %d %v", status, cse)
		}
		regID := cse["registrationId"].(string)
		cseAuth := cse["assignedSymmKeyID"].(string) + ":" + cse["credential"].(string)
		if status, body := register(acme, "in-cse.alice.example", "alice.example"); status != 403 || errCode(body) != "admin_fqdn_not_owned" {
			t.Fatalf("acme registered a Target under alice's adminFQDN: %d %v", status, body)
		}
		if status, body := register(s.alice, "in-cse.alice.example", "alice.example"); status != 409 || errCode(body) != "already_registered" {
			t.Fatalf("the same Target registered twice: %d %v", status, body)
		}
		if status, body := s.call(acme, "GET", "/maf/v1/clients/"+regID, "", nil); status != 404 {
			t.Fatalf("acme reads alice's registration: %d %v", status, body)
		}
		if status, body := s.call(s.alice, "GET", "/maf/v1/clients/"+regID, "", nil); status != 200 || body["credential"] != nil {
			t.Fatalf("alice reads her registration: %d %v (never its secret)", status, body)
		}
		if status, body := s.call(acme, "GET", "/maf/v1/clients", "", nil); status != 200 || len(body["clients"].([]any)) != 0 ||
			len(body["adminFQDNs"].([]any)) != 1 || body["adminFQDNs"].([]any)[0] != "acme.example" {
			t.Fatalf("acme's list shows %d %v, want its adminFQDN and none of alice's clients", status, body)
		}

		// A device provisioned a key for the Target by its FQDN.
		b := s.bundle("dev-2", s.lineU)
		out := filepath.Join(t.TempDir(), "dev-2")
		s.cli("enroll", "--bundle", s.writeBundle(b), "--out", out, "--psk", "--suid", "23", "--target", "in-cse.alice.example")
		var psk client.KeyAnswer
		if err := json.Unmarshal([]byte(readFile(t, filepath.Join(out, "psk.json"))), &psk); err != nil {
			t.Fatal(err)
		}
		fetch := "/maf/v1/fetchCredentials/" + psk.KeID + "/23"
		status, got := s.call(cseAuth, "GET", fetch, "", nil)
		if status != 200 || len(psk.TargetKeys) != 1 || got["credential"] != base64.StdEncoding.EncodeToString(psk.TargetKeys[0].Key) || got["enroleeId"] != b.AssignedID || got["status"] != "success" {
			t.Fatalf("the Target fetches by its FQDN: %d %v", status, got)
		}
		// The same at the MEF, where TS-0003 §8.3.5 places fetchCredentials.
		if status, body := s.call(cseAuth, "GET", strings.Replace(fetch, "/maf/", "/mef/", 1), "", nil); status != 200 || body["credential"] != got["credential"] {
			t.Fatalf("the Target fetches from the MEF: %d %v", status, body)
		}
		// acme's own Target is not authorised for it.
		_, gw := register(acme, "gw.acme.example", "acme.example")
		gwAuth := gw["assignedSymmKeyID"].(string) + ":" + gw["credential"].(string)
		if status, body := s.call(gwAuth, "GET", fetch, "", nil); status != 403 || errCode(body) != "target_not_authorised" {
			t.Fatalf("another tenant's Target fetched: %d %v", status, body)
		}

		// The device's Km (SUID 21) authenticates it to the MAF.
		bk := s.bundle("dev-3", nil)
		outK := filepath.Join(t.TempDir(), "dev-3")
		s.cli("enroll", "--bundle", s.writeBundle(bk), "--out", outK, "--psk", "--suid", "21")
		var km client.KeyAnswer
		if err := json.Unmarshal([]byte(readFile(t, filepath.Join(outK, "psk.json"))), &km); err != nil {
			t.Fatal(err)
		}
		kmAuth := km.KeyID + ":" + base64.StdEncoding.EncodeToString(km.Key)
		if status, body := s.call(kmAuth, "GET", "/maf/v1/credentials?assignedId="+url.QueryEscape(bk.AssignedID), "", nil); status != 200 || len(body["credentials"].([]any)) != 1 {
			t.Fatalf("the device with its Km: %d %v", status, body)
		}

		// De-registering a device (TS-0003 §8.3.4.2): another tenant
		// cannot; its owner revokes every credential, and the Target's
		// fetch and the device's Km stop working.
		for _, aid := range []string{b.AssignedID, bk.AssignedID} {
			path := "/maf/v1/devices/" + url.PathEscape(aid) + "/registration"
			if status, body := s.call(acme, "DELETE", path, "", nil); status != 404 {
				t.Fatalf("acme de-registered alice's device: %d %v", status, body)
			}
			if status, body := s.call(s.alice, "DELETE", path, "", nil); status != 200 || len(body["revoked"].([]any)) != 1 {
				t.Fatalf("de-register %s: %d %v", aid, status, body)
			}
		}
		if status, body := s.call(cseAuth, "GET", fetch, "", nil); status != 410 || errCode(body) != "credential_revoked" {
			t.Fatalf("fetch after de-registration: %d %v", status, body)
		}
		if status, body := s.call(kmAuth, "GET", "/maf/v1/credentials?assignedId="+url.QueryEscape(bk.AssignedID), "", nil); status != 401 {
			t.Fatalf("a de-registered device's Km: %d %v", status, body)
		}

		// Registration update and de-registration of the Target.
		if status, body := s.call(s.alice, "PATCH", "/maf/v1/clients/"+regID, "application/json", []byte(`{"labels":["moved"]}`)); status != 200 || body["labels"].([]any)[0] != "moved" {
			t.Fatalf("update: %d %v", status, body)
		}
		if status, body := s.call(acme, "DELETE", "/maf/v1/clients/"+regID, "", nil); status != 404 {
			t.Fatalf("acme de-registered alice's Target: %d %v", status, body)
		}
		if status, body := s.call(s.alice, "DELETE", "/maf/v1/clients/"+regID, "", nil); status != 200 {
			t.Fatalf("de-register: %d %v", status, body)
		}
		if status, body := s.call(cseAuth, "GET", fetch, "", nil); status != 401 || errCode(body) != "bad_key_credential" {
			t.Fatalf("a de-registered Target's credential: %d %v", status, body)
		}

		// A disabled stakeholder: its key and its clients stop at once.
		s.cli("admin", "disable-stakeholder", "--name", "acme")
		if status, body := register(acme, "other.acme.example", "acme.example"); status != http.StatusUnauthorized {
			t.Fatalf("a disabled stakeholder registers: %d %v", status, body)
		}
		if status, body := s.call(gwAuth, "GET", fetch, "", nil); status != 401 || errCode(body) != "stakeholder_disabled" {
			t.Fatalf("a disabled stakeholder's client: %d %v", status, body)
		}
	})
}
