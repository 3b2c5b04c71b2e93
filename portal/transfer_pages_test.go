package portal_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/credfactory/credfactory/crlreason"
	"github.com/credfactory/credfactory/portal"
	"github.com/credfactory/credfactory/store"
)

var bundleAssignedID = regexp.MustCompile(`&#34;assignedId&#34;:&#34;([^&]+)&#34;|"assignedId":"([^"]+)"`)

// TestPagesReleaseRevokeClaim walks an ownership transfer through the pages
// over real HTTPS: the owner revokes a credential and releases the device
// with the forms on the device page; the old owner loses sight of it;
// another subscriber claims it by its claim code and gets a fresh assigned
// ID; nobody else can do any of it.
func TestPagesReleaseRevokeClaim(t *testing.T) {
	env := newPageEnv(t)
	ctx := context.Background()
	maker := env.stakeholder(t, "maker", store.RoleManufacturer, "maker password 1")
	alice := env.stakeholder(t, "alice", store.RoleSubscriber, "alice password 1")
	env.stakeholder(t, "bob", store.RoleSubscriber, "bob password 12")
	if _, err := env.portal.CreateStakeholder(ctx, "helper", store.RoleInstaller, "helper password 1", "alice"); err != nil {
		t.Fatal(err)
	}
	rows, _ := portal.JSONRows(strings.NewReader(`[{"deviceId":"tr-1","claimCode":"label-tr-1"},{"deviceId":"tr-2","claimCode":"label-tr-2"}]`))
	if rep, err := env.portal.Upload(ctx, portal.Principal{Stakeholder: maker, Via: "session"}, rows); err != nil || rep.Accepted != 2 {
		t.Fatalf("upload: %+v %v", rep, err)
	}
	if n, err := env.portal.HandOver(ctx, portal.Principal{Stakeholder: maker, Via: "session"}, "alice", []string{"tr-1", "tr-2"}); err != nil || n != 2 {
		t.Fatalf("hand over: %d %v", n, err)
	}

	a := env.client(t)
	atok := a.login("alice", "alice password 1")
	r := a.post("/devices/tr-1/enrol", url.Values{"csrf": {atok}, "claimCode": {"label-tr-1"}})
	m := bundleAssignedID.FindStringSubmatch(r.body)
	if r.status != 200 || m == nil {
		t.Fatalf("alice's token: %d %s", r.status, r.body)
	}
	oldAID := m[1] + m[2]
	// Two shared keys of the device's assigned ID, as the MAF would hold them.
	creds := make([]store.Credential, 2)
	for i, suid := range []int{22, 24} {
		kid := fmt.Sprintf("%02x00aa@mef.sp.example", i)
		creds[i] = store.Credential{ID: fmt.Sprintf("%d-%s", suid-10, kid), AssignedID: oldAID, DeviceID: "tr-1", Tenant: alice.ID,
			Type: store.TypePSK, SUID: suid, KeyID: &kid, KeID: &kid, KDFContext: []byte(`{"v":1}`), NotBefore: time.Now(),
			NotAfter: time.Now().Add(time.Hour), Status: store.StatusActive, Source: store.SourceRSPF, CreatedAt: time.Now()}
		if err := env.st.RegisterCredential(ctx, creds[i]); err != nil {
			t.Fatal(err)
		}
	}
	status := func(id string) (string, int) {
		c, err := env.st.Credential(ctx, store.ByID, id)
		if err != nil {
			t.Fatal(err)
		}
		reason := -1
		if c.RevocationReason != nil {
			reason = *c.RevocationReason
		}
		return c.Status, reason
	}

	r = a.get("/devices/tr-1")
	for _, want := range []string{`id="revoke"`, `id="release"`, `value="` + creds[0].ID + `"`, `<option value="keyCompromise" selected>`} {
		if r.status != 200 || !strings.Contains(r.body, want) {
			t.Fatalf("alice's device page lacks %s: %d %s", want, r.status, r.body)
		}
	}

	b := env.client(t)
	btok := b.login("bob", "bob password 12")
	h := env.client(t)
	htok := h.login("helper", "helper password 1")
	for _, tc := range []struct {
		name   string
		c      *pageClient
		path   string
		form   url.Values
		status int
		text   string
	}{
		{"revoke without CSRF", a, "/devices/tr-1/revoke", url.Values{"credentialId": {creds[0].ID}}, 403, "CSRF"},
		{"release without CSRF", a, "/devices/tr-1/release", url.Values{}, 403, "CSRF"},
		{"revoke with a bad reason", a, "/devices/tr-1/revoke", url.Values{"csrf": {atok}, "credentialId": {creds[0].ID}, "reason": {"whim"}}, 400, "Nothing was revoked: reason must be an RFC 5280 CRLReason name"},
		{"revoke with bad SUIDs", a, "/devices/tr-1/revoke", url.Values{"csrf": {atok}, "suids": {"22,x"}, "reason": {"keyCompromise"}}, 400, "Nothing was revoked: usage codes are numbers"},
		{"revoke another device's credential", a, "/devices/tr-2/revoke", url.Values{"csrf": {atok}, "credentialId": {creds[0].ID}, "reason": {"keyCompromise"}}, 404, "no such credential on this device"},
		{"another tenant revokes", b, "/devices/tr-1/revoke", url.Values{"csrf": {btok}, "credentialId": {creds[0].ID}, "reason": {"keyCompromise"}}, 404, "no such device"},
		{"another tenant releases", b, "/devices/tr-1/release", url.Values{"csrf": {btok}}, 404, "no such device"},
		{"another tenant claims an owned device", b, "/claim", url.Values{"csrf": {btok}, "deviceId": {"tr-1"}, "claimCode": {"label-tr-1"}}, 404, "no such device"},
		// The installer works on alice's devices but does not give them away.
		{"alice's installer releases", h, "/devices/tr-1/release", url.Values{"csrf": {htok}}, 403, "may not"},
		{"a release with a long reason", a, "/devices/tr-1/release", url.Values{"csrf": {atok}, "reason": {strings.Repeat("x", 501)}}, 400, "The device was not released: the reason is at most 500 characters"},
	} {
		if r := tc.c.post(tc.path, tc.form); r.status != tc.status || !strings.Contains(r.body, tc.text) {
			t.Errorf("%s: %d, want %d with %q in %s", tc.name, r.status, tc.status, tc.text, r.body)
		}
	}
	for _, c := range creds {
		if st, _ := status(c.ID); st != store.StatusActive {
			t.Fatalf("a refused request revoked %s", c.ID)
		}
	}

	// Revoke one credential with a reason.
	r = a.post("/devices/tr-1/revoke", url.Values{"csrf": {atok}, "credentialId": {creds[0].ID}, "reason": {"keyCompromise"}})
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/devices/tr-1" {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	if st, reason := status(creds[0].ID); st != store.StatusRevoked || reason != 1 {
		t.Fatalf("after revocation: %s reason %d", st, reason)
	}
	if st, _ := status(creds[1].ID); st != store.StatusActive {
		t.Fatal("revoking one credential revoked another")
	}

	// Release: the rest is revoked, the open token cancelled, and alice
	// no longer sees the device.
	// The answer shows the device's new claim code, once.
	r = a.post("/devices/tr-1/release", url.Values{"csrf": {atok}, "reason": {"sold to bob"}})
	codeMatch := regexp.MustCompile(`id="released-claim-code">([0-9A-Z-]{19})<`).FindStringSubmatch(r.body)
	if r.status != http.StatusOK || !strings.Contains(r.body, "Device <strong>tr-1</strong> was released") || codeMatch == nil {
		t.Fatalf("release: %d %s", r.status, r.body)
	}
	newCode := codeMatch[1]
	if r := a.get("/devices"); strings.Contains(r.body, `href="/devices/tr-1@`) || strings.Contains(r.body, newCode) {
		t.Errorf("alice's list after release: %s", r.body)
	}
	if r := a.get("/devices/tr-1"); r.status != 404 {
		t.Errorf("alice still sees the released device: %d", r.status)
	}
	if st, reason := status(creds[1].ID); st != store.StatusRevoked || reason != crlreason.AffiliationChanged {
		t.Fatalf("after release: %s reason %d", st, reason)
	}
	if st, reason := status(creds[0].ID); st != store.StatusRevoked || reason != 1 {
		t.Fatalf("the release changed an earlier revocation: %s reason %d", st, reason)
	}
	ens, _ := env.st.Enrolments(ctx, "tr-1")
	if len(ens) != 1 || ens[0].State != store.EnrolmentCancelled {
		t.Fatalf("alice's token after release: %+v", ens)
	}

	// Bob claims it: a wrong code counts against the lockout, the right one
	// gets him a token with a fresh assigned ID.
	if r := b.post("/claim", url.Values{"csrf": {btok}, "deviceId": {"tr-1"}, "claimCode": {"not-the-label"}}); r.status != 403 || !strings.Contains(r.body, "The device was not claimed: that is not this device") {
		t.Fatalf("wrong claim code: %d %s", r.status, r.body)
	}
	if r := b.post("/claim", url.Values{"csrf": {btok}, "deviceId": {"tr-1"}, "claimCode": {"label-tr-1"}}); r.status != 403 {
		t.Fatalf("the label's code after the release: %d %s", r.status, r.body)
	}
	r = b.post("/claim", url.Values{"csrf": {btok}, "deviceId": {"tr-1"}, "claimCode": {newCode}})
	m = bundleAssignedID.FindStringSubmatch(r.body)
	if r.status != 200 || m == nil {
		t.Fatalf("bob's claim: %d %s", r.status, r.body)
	}
	if newAID := m[1] + m[2]; newAID == oldAID {
		t.Fatalf("bob got the old assigned ID %s", oldAID)
	}
	if r := b.get("/devices/tr-1"); r.status != 200 || !strings.Contains(r.body, `id="device-state">token-issued`) {
		t.Fatalf("bob's device page: %d %s", r.status, r.body)
	}
	// Alice, who may still know the label, is too late.
	if r := a.post("/claim", url.Values{"csrf": {atok}, "deviceId": {"tr-1"}, "claimCode": {newCode}}); r.status != 404 {
		t.Errorf("alice claims bob's device: %d %s", r.status, r.body)
	}
	d, _ := env.st.Device(ctx, "tr-1")
	if d.OwnerID == nil || d.Tenant == alice.ID || *d.OwnerID != d.Tenant {
		t.Fatalf("device after bob's claim: %+v", d)
	}
}
