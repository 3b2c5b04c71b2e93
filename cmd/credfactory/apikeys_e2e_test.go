package main

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestAPIKeyScopes tries a leaked enrolment key as an attacker would: it
// cannot mint keys, manage OBFs, or give itself scopes; a key that may mint
// does so only within its own scopes, its offspring record their creator,
// and revoking it revokes them. The key list shows creator, scopes and
// last use.
func TestAPIKeyScopes(t *testing.T) {
	s := startSP(t)
	admin := s.stakeholder("maker", "manufacturer") // the operator's key: every scope
	mint := func(key string, body map[string]any) (int, map[string]any) {
		t.Helper()
		return s.call(key, "POST", "/api/v1/api-keys", "application/json", mustJSON(body))
	}
	status, bot := mint(admin, map[string]any{"name": "enrol bot", "scopes": []string{"read", "devices", "enrol"}})
	if status != 201 || !strings.HasPrefix(bot["createdBy"].(string), "api-key:") {
		t.Fatalf("mint the enrolment key: %d %v", status, bot)
	}
	botKey := bot["key"].(string)
	status, minter := mint(admin, map[string]any{"name": "minter", "scopes": []string{"read", "keys"}})
	if status != 201 {
		t.Fatalf("mint the minter: %d %v", status, minter)
	}
	minterKey, minterID := minter["key"].(string), minter["keyId"].(string)

	refused := []struct {
		name, method, path, ctype, body string
	}{
		{"mint a key", "POST", "/api/v1/api-keys", "application/json", `{"name":"more"}`},
		{"mint a key with every scope", "POST", "/api/v1/api-keys", "application/json", `{"name":"more","scopes":["keys","obfs"]}`},
		{"list keys", "GET", "/api/v1/api-keys", "", ""},
		{"revoke another key", "POST", "/api/v1/api-keys/" + minterID + "/revoke", "", ""},
		{"register an OBF", "POST", "/api/v1/obfs", "application/json", `{"name":"x","kind":"OBD"}`},
	}
	for _, r := range refused {
		status, body := s.call(botKey, r.method, r.path, r.ctype, []byte(r.body))
		if status != http.StatusForbidden || errCode(body) != "scope_missing" {
			t.Errorf("the enrolment key may %s: %d %v", r.name, status, body)
		}
	}
	if status, body := s.call(botKey, "POST", "/api/v1/devices", "text/csv", []byte("deviceId,claimCode\nbot-1,K7QX-9RMT\n")); status != 200 {
		t.Fatalf("the enrolment key uploads: %d %v", status, body)
	}

	// A key that may mint, and its offspring.
	if status, body := mint(minterKey, map[string]any{"name": "escalate", "scopes": []string{"devices"}}); status != 403 || errCode(body) != "scope_missing" {
		t.Fatalf("the minter gave a scope it lacks: %d %v", status, body)
	}
	status, child := mint(minterKey, map[string]any{"name": "child"})
	if status != 201 || child["createdBy"] != "api-key:"+minterID || child["parentKeyId"] != minterID {
		t.Fatalf("the minter's child: %d %v", status, child)
	}
	if sc := child["scopes"].([]any); len(sc) != 1 || sc[0] != "read" {
		t.Fatalf("the child's scopes %v, want the minter's share of the defaults: read", sc)
	}
	childKey := child["key"].(string)
	if status, _ := s.call(childKey, "GET", "/api/v1/devices", "", nil); status != 200 {
		t.Fatalf("the child reads: %d", status)
	}
	status, out := s.call(admin, "POST", "/api/v1/api-keys/"+minterID+"/revoke", "", nil)
	if status != 200 || len(out["revokedKeys"].([]any)) != 2 {
		t.Fatalf("revoke the minter: %d %v", status, out)
	}
	for name, key := range map[string]string{"minter": minterKey, "child": childKey} {
		if status, body := s.call(key, "GET", "/api/v1/devices", "", nil); status != 401 || errCode(body) != "bad_api_key" {
			t.Errorf("the %s works after the minter was revoked: %d %v", name, status, body)
		}
	}

	// The list: creator, scopes, and the bot's use, written in the
	// background.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, list := s.call(admin, "GET", "/api/v1/api-keys", "", nil)
		var botView map[string]any
		for _, k := range list["keys"].([]any) {
			if k := k.(map[string]any); k["keyId"] == bot["keyId"] {
				botView = k
			}
		}
		if botView == nil || botView["createdBy"] != bot["createdBy"] || len(botView["scopes"].([]any)) != 3 {
			t.Fatalf("the list shows the bot as %v", botView)
		}
		if botView["lastUsedAt"] != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the bot's last use never showed: %v", botView)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// A key may always revoke itself, scope or not.
	if status, body := s.call(botKey, "POST", "/api/v1/api-keys/"+bot["keyId"].(string)+"/revoke", "", nil); status != 200 {
		t.Fatalf("the bot revokes itself: %d %v", status, body)
	}
	if status, _ := s.call(botKey, "GET", "/api/v1/devices", "", nil); status != 401 {
		t.Fatalf("the bot after revoking itself: %d", status)
	}
}
