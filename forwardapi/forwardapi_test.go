package forwardapi

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestStdlibOnly: the factory-line program imports this package, so it
// must not pull in the server (or anything outside the standard library).
func TestStdlibOnly(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, p := range strings.Fields(string(out)) {
		if p != "github.com/credfactory/credfactory/forwardapi" {
			t.Errorf("forwardapi depends on %s", p)
		}
	}
}

// TestWireForm pins the JSON names both sides agree on.
func TestWireForm(t *testing.T) {
	raw, _ := json.Marshal(Request{Items: []Item{{Token: "t", AssignedID: "S1", CSR: "c"},
		{Token: "t2", AssignedID: "S2", Key: &Key{SUID: 22, TargetIDs: []string{"x"}, Value: []byte{1, 2}}}}})
	want := `{"items":[{"token":"t","assignedId":"S1","csr":"c"},{"token":"t2","assignedId":"S2","key":{"suid":22,"targetIds":["x"],"value":"AQI="}}]}`
	if string(raw) != want {
		t.Errorf("request:\n got %s\nwant %s", raw, want)
	}
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	raw, _ = json.Marshal(Result{Index: 1, Status: StatusRecorded, CredentialID: "12-k@sp", KeyID: "k@sp", KeID: "e@sp", NotAfter: at})
	want = `{"index":1,"status":"recorded","credentialId":"12-k@sp","keyId":"k@sp","keId":"e@sp","notAfter":"2030-01-02T03:04:05Z"}`
	if string(raw) != want {
		t.Errorf("result:\n got %s\nwant %s", raw, want)
	}
}

func TestTransient(t *testing.T) {
	for code, want := range map[string]bool{
		CodeRegistryUnavailable: true, CodeRegistryContention: true, CodeHSMUnavailable: true, CodeInternal: true,
		CodeTokenMismatch: false, CodeTokenRedeemed: false, CodeSubCARetired: false, CodeKeyIDAssignedBySP: false,
		CodeKeyLifetime: false, CodeBadItem: false, "": false, "something_new": false,
	} {
		if Transient(code) != want {
			t.Errorf("Transient(%q) = %v", code, !want)
		}
	}
}

func TestAssignedIDURIAndType(t *testing.T) {
	for _, c := range []struct {
		id, uri string
		typ     int
	}{{"Sdev1", "https://sp.example/Sdev1", CredentialAEIDCert}, {"/cse-1", "https://sp.example/cse-1", CredentialCSEIDCert}} {
		if u := AssignedIDURI("sp.example", c.id).String(); u != c.uri || CertCredentialType(c.id) != c.typ {
			t.Errorf("%s: %s %d", c.id, u, CertCredentialType(c.id))
		}
		// The absolute ID of TS-0004 §6.2.3 is the URI's hier-part.
		if l := LegacyAssignedIDURI("sp.example", c.id).String(); "https:"+l != c.uri {
			t.Errorf("%s: legacy form %s", c.id, l)
		}
	}
}
