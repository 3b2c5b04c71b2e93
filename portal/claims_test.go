package portal_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/credfactory/credfactory/apierr"
	"github.com/credfactory/credfactory/portal"
	"github.com/credfactory/credfactory/ratelimit"
	"github.com/credfactory/credfactory/store"
)

// claimEnv: a manufacturer with devices, two subscribers, and bob's
// trusted OBF.
type claimEnv struct {
	env        *pageEnv
	maker, bob portal.Principal
	bobOBF     portal.Principal
	// codes are the claim codes the releases in upload handed out.
	codes map[string]string
}

func newClaimEnv(t *testing.T, mod func(*portal.Config)) *claimEnv {
	t.Helper()
	env := newPageEnvWith(t, mod)
	maker := env.stakeholder(t, "maker", store.RoleManufacturer, "maker password 1")
	bob := env.stakeholder(t, "bob", store.RoleSubscriber, "bob password 12")
	obf := &store.OBF{ID: "obf-bob", StakeholderID: bob.ID, Name: "bob's OBF", Trusted: true}
	return &claimEnv{env: env, maker: portal.Principal{Stakeholder: maker, Via: "session"},
		bob: portal.Principal{Stakeholder: bob, Via: "session"}, bobOBF: portal.Principal{Stakeholder: bob, Via: "obf", OBF: obf},
		codes: map[string]string{}}
}

// upload pre-enrols devices (JSON rows) as the maker; release releases each
// (as its holder, the maker), which makes it claimable, with a fresh claim
// code (kept in c.codes); a name prefixed "-" is released with none.
func (c *claimEnv) upload(t *testing.T, rows string, release ...string) {
	t.Helper()
	ctx := context.Background()
	r, _ := portal.JSONRows(strings.NewReader(rows))
	if rep, err := c.env.portal.Upload(ctx, c.maker, r); err != nil || len(rep.Rejected) != 0 {
		t.Fatalf("upload: %+v %v", rep, err)
	}
	for _, id := range release {
		req := portal.ReleaseRequest{}
		if bare, ok := strings.CutPrefix(id, "-"); ok {
			id, req.NewClaimCode = bare, new(bool)
		}
		out, err := c.env.portal.Release(ctx, c.maker, id, req)
		if err != nil || (out.ClaimCode == "") != (req.NewClaimCode != nil) {
			t.Fatalf("release %s: %+v %v", id, out, err)
		}
		c.codes[id] = out.ClaimCode
	}
}

func deviceCertPEM(t *testing.T) string {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "device"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func wantAPIErr(t *testing.T, what string, err error, status int, code string) {
	t.Helper()
	var ae *apierr.Error
	if !errors.As(err, &ae) || ae.Status != status || ae.Code != code {
		t.Fatalf("%s: %v, want %d %s", what, err, status, code)
	}
}

// TestClaimNeedsProofOfControl: vouching proves control only of a device
// already in the OBF's stakeholder's tenant; a claim (the device changes
// tenant) needs a claim code or a nonce signature.
func TestClaimNeedsProofOfControl(t *testing.T) {
	c := newClaimEnv(t, nil)
	ctx := context.Background()
	c.upload(t, `[{"deviceId":"v-free"},{"deviceId":"v-mine"}]`, "v-free")
	if n, err := c.env.portal.HandOver(ctx, c.maker, "bob", []string{"v-mine"}); err != nil || n != 1 {
		t.Fatalf("hand-over: %d %v", n, err)
	}
	vouch := portal.EnrolRequest{Proof: portal.Proof{Vouch: true}, OBFID: "obf-bob"}
	_, err := c.env.portal.Enrol(ctx, c.bobOBF, "v-free", vouch)
	wantAPIErr(t, "a trusted OBF vouching for an unowned device", err, 404, "device_not_found")
	if d, _ := c.env.st.Device(ctx, "v-free"); d.OwnerID != nil || d.Tenant != c.maker.Stakeholder.ID {
		t.Fatalf("the refused vouch moved the device: %+v", d)
	}
	if _, err := c.env.portal.Enrol(ctx, c.bobOBF, "v-mine", vouch); err != nil {
		t.Fatalf("vouching for its own stakeholder's device: %v", err)
	}
}

// TestClaimLeaksNothing: for a claim, a proof method the device does not
// have is 404 device_not_found, exactly as for a device that does not
// exist; a wrong proof is the one 403. The device's holder still gets the
// telling 409s.
func TestClaimLeaksNothing(t *testing.T) {
	c := newClaimEnv(t, nil)
	ctx := context.Background()
	c.upload(t, `[{"deviceId":"l-bare"},{"deviceId":"l-code","claimCode":"label-l-code"}]`, "-l-bare", "l-code")
	p := c.env.portal
	for _, tc := range []struct {
		name, device string
		req          portal.EnrolRequest
		status       int
		code         string
	}{
		{"no such device", "l-none", portal.EnrolRequest{Proof: portal.Proof{ClaimCode: "whatever-123"}}, 404, "device_not_found"},
		{"claim code on a device without one", "l-bare", portal.EnrolRequest{Proof: portal.Proof{ClaimCode: "whatever-123"}}, 404, "device_not_found"},
		{"nonce on a device without a certificate", "l-bare", portal.EnrolRequest{Proof: portal.Proof{Nonce: "n", Signature: "cw=="}}, 404, "device_not_found"},
		{"vouch for a claim", "l-code", portal.EnrolRequest{Proof: portal.Proof{Vouch: true}, OBFID: "obf-bob"}, 404, "device_not_found"},
		{"wrong claim code", "l-code", portal.EnrolRequest{Proof: portal.Proof{ClaimCode: "wrong-code-1"}}, 403, "wrong_claim_code"},
	} {
		who := c.bob
		if tc.req.Proof.Vouch {
			who = c.bobOBF
		}
		_, err := p.Enrol(ctx, who, tc.device, tc.req)
		wantAPIErr(t, tc.name, err, tc.status, tc.code)
	}
	_, _, err := p.Nonce(ctx, c.bob, "l-bare")
	wantAPIErr(t, "a claimant's nonce for a device without a certificate", err, 404, "device_not_found")
	_, _, err = p.Nonce(ctx, c.maker, "l-bare")
	wantAPIErr(t, "the holder's nonce for a device without a certificate", err, 409, "no_device_certificate")
}

// TestClaimOnlyAfterRelease: a device its manufacturer never handed over
// is not claimable by whoever reads its label; once released it is, and
// the claim makes it unclaimable again. The new owner sees only its own
// history on the device page.
func TestClaimOnlyAfterRelease(t *testing.T) {
	c := newClaimEnv(t, nil)
	ctx := context.Background()
	p := c.env.portal
	c.upload(t, `[{"deviceId":"r-1","claimCode":"label-r-1"}]`)
	code := portal.EnrolRequest{Proof: portal.Proof{ClaimCode: "label-r-1"}}
	_, err := p.Enrol(ctx, c.bob, "r-1", code)
	wantAPIErr(t, "claiming a device never handed over", err, 404, "device_not_found")
	// The maker enrols it itself once (history of the maker's tenant),
	// then releases it.
	if _, err := p.Enrol(ctx, c.maker, "r-1", code); err != nil {
		t.Fatalf("the maker's own token: %v", err)
	}
	rel, err := p.Release(ctx, c.maker, "r-1", portal.ReleaseRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// The label's code no longer claims it (whoever read the label before
	// the release, its releasing holder included); the new one does.
	_, err = p.Enrol(ctx, c.bob, "r-1", code)
	wantAPIErr(t, "claiming with the label's code after the release", err, 403, "wrong_claim_code")
	code = portal.EnrolRequest{Proof: portal.Proof{ClaimCode: rel.ClaimCode}}
	if _, err := p.Enrol(ctx, c.bob, "r-1", code); err != nil {
		t.Fatalf("claiming the released device with its new code: %v", err)
	}
	detail, err := p.Detail(ctx, c.bob, "r-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(detail.Enrolments) != 1 || detail.Enrolments[0].Tenant != c.bob.Stakeholder.ID {
		t.Fatalf("bob's device page shows enrolments %+v, want his one", detail.Enrolments)
	}
	if b, _ := json.Marshal(detail.Enrolments); strings.Contains(string(b), c.maker.Stakeholder.ID) {
		t.Fatalf("bob sees the maker's history: %s", b)
	}
	alice := c.env.stakeholder(t, "alice", store.RoleSubscriber, "alice password 1")
	_, err = p.Enrol(ctx, portal.Principal{Stakeholder: alice, Via: "session"}, "r-1", code)
	wantAPIErr(t, "claiming a device just claimed", err, 404, "device_not_found")
}

// TestNonceRateLimited: nonce requests count against the tenant's token
// rate limit, like tokens: they write the registry and replace a rival
// claimant's nonce.
func TestNonceRateLimited(t *testing.T) {
	c := newClaimEnv(t, func(cfg *portal.Config) {
		cfg.Limits.TokenTenant = ratelimit.New[string](ratelimit.Options{Name: ratelimit.NameTokenTenant, Rate: 0.001, Burst: 2})
	})
	ctx := context.Background()
	rows, _ := json.Marshal([]map[string]string{{"deviceId": "n-1", "deviceCert": deviceCertPEM(t)}})
	c.upload(t, string(rows), "n-1")
	for i := range 2 {
		if _, _, err := c.env.portal.Nonce(ctx, c.bob, "n-1"); err != nil {
			t.Fatalf("nonce %d: %v", i+1, err)
		}
	}
	_, _, err := c.env.portal.Nonce(ctx, c.bob, "n-1")
	var ae *apierr.Error
	if !errors.As(err, &ae) || ae.Status != 429 {
		t.Fatalf("third nonce within the burst of 2: %v, want 429", err)
	}
}
