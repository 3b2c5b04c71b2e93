package portal_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/credfactory/credfactory/portal"
	"github.com/credfactory/credfactory/store"
)

// TestNonceCapPerDevice: a device holds a bounded number of outstanding
// nonces, one per claimant; past the cap a new claimant is refused with
// 429 too_many_nonces and nobody's nonce is evicted; a claimant asking
// again replaces its own and is not refused.
func TestNonceCapPerDevice(t *testing.T) {
	c := newClaimEnv(t, func(cfg *portal.Config) { cfg.MaxNoncesPerDevice = 2 })
	ctx := context.Background()
	rows, _ := json.Marshal([]map[string]string{{"deviceId": "cap-1", "deviceCert": deviceCertPEM(t)}})
	c.upload(t, string(rows), "cap-1")
	carol := portal.Principal{Stakeholder: c.env.stakeholder(t, "carol", store.RoleSubscriber, "carol password 1"), Via: "session"}
	dave := portal.Principal{Stakeholder: c.env.stakeholder(t, "dave", store.RoleSubscriber, "dave password 12"), Via: "session"}
	for _, who := range []portal.Principal{c.bob, carol, c.bob} {
		if _, _, err := c.env.portal.Nonce(ctx, who, "cap-1"); err != nil {
			t.Fatalf("%s's nonce: %v", who.Stakeholder.Name, err)
		}
	}
	_, _, err := c.env.portal.Nonce(ctx, dave, "cap-1")
	wantAPIErr(t, "a third claimant past the cap of 2", err, 429, "too_many_nonces")
}

// TestDeviceReferences: device IDs are per manufacturer. Two makers upload
// and release the same ID; a reference naming a maker reaches only that
// maker's device, and never another tenant's; a claim code picks the
// device it belongs to, on the single route and in a bulk request; a nonce
// for the shared ID must name the maker; a malformed reference is 404.
func TestDeviceReferences(t *testing.T) {
	c := newClaimEnv(t, nil)
	ctx := context.Background()
	p := c.env.portal
	c.upload(t, `[{"deviceId":"s-1","claimCode":"label-s-1-a"},{"deviceId":"s-2","claimCode":"label-s-2-a"}]`, "s-1", "s-2")
	maker2 := portal.Principal{Stakeholder: c.env.stakeholder(t, "maker2", store.RoleManufacturer, "maker2 password 1"), Via: "session"}
	r, _ := portal.JSONRows(strings.NewReader(`[{"deviceId":"s-1","claimCode":"label-s-1-b"},{"deviceId":"s-2","claimCode":"label-s-2-b"}]`))
	if rep, err := p.Upload(ctx, maker2, r); err != nil || rep.Inserted != 2 || len(rep.Rejected) != 0 {
		t.Fatalf("maker2's upload of the same IDs: %+v %v", rep, err)
	}
	codes2 := map[string]string{}
	for _, id := range []string{"s-1", "s-2"} {
		out, err := p.Release(ctx, maker2, id, portal.ReleaseRequest{})
		if err != nil {
			t.Fatal(err)
		}
		codes2[id] = out.ClaimCode
	}
	m1, m2 := c.maker.Stakeholder.ID, maker2.Stakeholder.ID
	for _, tc := range []struct {
		name string
		who  portal.Principal
		ref  string
		want string // manufacturer of the device found, "" for 404
	}{
		{"maker's own", c.maker, "s-1", m1},
		{"maker's own, named", c.maker, "s-1@" + m1, m1},
		{"the other maker's, named", c.maker, "s-1@" + m2, ""},
		{"maker2's own", maker2, "s-1", m2},
		{"a claimant's view", c.bob, "s-1", ""},
		{"two @", c.maker, "s-1@" + m1 + "@x", ""},
		{"bad device ID", c.maker, "s/1@" + m1, ""},
	} {
		d, err := p.Device(ctx, tc.who, tc.ref)
		if tc.want == "" {
			wantAPIErr(t, tc.name, err, 404, "device_not_found")
			continue
		}
		if err != nil || d.ManufacturerID != tc.want || d.DeviceID != "s-1" {
			t.Fatalf("%s: %+v %v", tc.name, d, err)
		}
	}
	_, _, err := p.Nonce(ctx, c.bob, "s-1")
	wantAPIErr(t, "a nonce for an ID two makers released", err, 409, "ambiguous_device_id")

	// The single route: maker2's code gets maker2's device.
	if _, err := p.Enrol(ctx, c.bob, "s-1", portal.EnrolRequest{Proof: portal.Proof{ClaimCode: codes2["s-1"]}}); err != nil {
		t.Fatalf("bob claims s-1 with maker2's code: %v", err)
	}
	if d, err := p.Device(ctx, c.bob, "s-1"); err != nil || d.ManufacturerID != m2 {
		t.Fatalf("bob's s-1: %+v %v", d, err)
	}
	if d, err := p.Device(ctx, c.maker, "s-1"); err != nil || d.Tenant != m1 {
		t.Fatalf("the first maker's s-1 after bob's claim: %+v %v", d, err)
	}

	// Bulk: maker2's code for s-2 gets maker2's device; a row naming the
	// first maker's s-1 (still released, beside bob's own s-1) reaches
	// that device, whose label's code the release replaced.
	key, _, err := p.NewAPIKey(ctx, c.bob, "bulk")
	if err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf("{\"deviceId\":\"s-2\",\"proof\":{\"claimCode\":%q}}\n{\"deviceId\":\"s-1@%s\",\"proof\":{\"claimCode\":\"label-s-1-a\"}}\n", codes2["s-2"], m1)
	out, raw := postBundles(t, c.env.base, c.env.root, key, "scope-batch", body)
	if len(out.Results) != 2 {
		t.Fatalf("bulk: %.500s", raw)
	}
	if out.Results[0].Status != "issued" || out.Results[1].Error == nil || out.Results[1].Error.Code != "wrong_claim_code" {
		t.Fatalf("bulk results: %.500s", raw)
	}
	if d, err := p.Device(ctx, c.bob, "s-2"); err != nil || d.ManufacturerID != m2 {
		t.Fatalf("bob's s-2 after the bulk claim: %+v %v", d, err)
	}
}

// TestClaimSourceBackoff: wrong claim codes from one source address are
// slowed whichever accounts send them: past the source's free attempts
// (the account budget, 3 here) the next claim from that address waits,
// right code or not, while the same claimant from another address goes
// through; once the wait has passed the address is let through again.
func TestClaimSourceBackoff(t *testing.T) {
	c := newClaimEnv(t, func(cfg *portal.Config) { cfg.ClaimMaxFailuresAccount, cfg.ClaimMaxFailures = 3, 1000 })
	ctx := context.Background()
	p := c.env.portal
	now := time.Now()
	portal.SetClock(p, func() time.Time { return now })
	c.upload(t, `[{"deviceId":"src-1"},{"deviceId":"src-2"}]`, "src-1", "src-2")
	attacker, other := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("198.51.100.7")
	as := func(who portal.Principal, src netip.Addr) portal.Principal { who.Source = src; return who }
	eve := portal.Principal{Stakeholder: c.env.stakeholder(t, "eve", store.RoleSubscriber, "eve password 123"), Via: "session"}
	mallory := portal.Principal{Stakeholder: c.env.stakeholder(t, "mallory", store.RoleSubscriber, "mallory password1"), Via: "session"}
	guess := portal.EnrolRequest{Proof: portal.Proof{ClaimCode: "WRONG-CODE-0000-0000"}}
	for i, who := range []portal.Principal{eve, eve, mallory} {
		_, err := p.Enrol(ctx, as(who, attacker), "src-1", guess)
		wantAPIErr(t, fmt.Sprintf("wrong code %d", i+1), err, 403, "wrong_claim_code")
	}
	right := portal.EnrolRequest{Proof: portal.Proof{ClaimCode: c.codes["src-1"]}}
	_, err := p.Enrol(ctx, as(c.bob, attacker), "src-1", right)
	wantAPIErr(t, "the right code from the slowed address", err, 429, "claim_locked")
	if _, err := p.Enrol(ctx, as(c.bob, other), "src-1", right); err != nil {
		t.Fatalf("the right code from another address: %v", err)
	}
	now = now.Add(2 * time.Second)
	if _, err := p.Enrol(ctx, as(c.bob, attacker), "src-2", portal.EnrolRequest{Proof: portal.Proof{ClaimCode: c.codes["src-2"]}}); err != nil {
		t.Fatalf("the slowed address after its wait: %v", err)
	}
}
