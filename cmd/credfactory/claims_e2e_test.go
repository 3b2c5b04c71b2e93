package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"testing"
	"time"
)

// selfSignedDevice is a device's factory key and certificate (PEM).
func selfSignedDevice(t *testing.T, cn string) (*ecdsa.PrivateKey, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// nonceProof asks for a nonce for device as key's stakeholder and signs it
// with the device's key.
func (s *sp) nonceProof(key, device string, devKey *ecdsa.PrivateKey) map[string]any {
	s.t.Helper()
	status, body := s.call(key, "POST", "/api/v1/devices/"+device+"/nonce", "application/json", nil)
	nonce, _ := body["nonce"].(string)
	if status != 200 || nonce == "" {
		s.t.Fatalf("nonce for %s: %d %v", device, status, body)
	}
	digest := sha256.Sum256([]byte(nonce))
	sig, err := ecdsa.SignASN1(rand.Reader, devKey, digest[:])
	if err != nil {
		s.t.Fatal(err)
	}
	return map[string]any{"nonce": nonce, "signature": base64.StdEncoding.EncodeToString(sig)}
}

// TestTransferProofOfControl is the ownership transfer as an attacker
// tries it, on both registries (docs/ownership.md):
//   - the releasing owner cannot claim the device back with the label's
//     code: the release handed out a new code, and that one claims it;
//   - two claimants' nonces for one device are both live: the second
//     request does not cancel the first claimant's signed nonce, and one
//     claimant cannot use another's;
//   - an attacker's wrong codes lock the attacker, never the device: the
//     rightful claimant's correct code goes through meanwhile.
func TestTransferProofOfControl(t *testing.T) {
	onBothBackends(t, func(t *testing.T, _ string, env []string) {
		s := startSP(t, env...)
		acme := s.stakeholder("acme", "manufacturer")
		alice := s.stakeholder("alice", "subscriber")
		bob := s.stakeholder("bob", "subscriber")
		carol := s.stakeholder("carol", "subscriber")
		mallory := s.stakeholder("mallory", "subscriber")
		devKey, devCert := selfSignedDevice(t, "pc-n")
		rows := mustJSON([]map[string]string{{"deviceId": "pc-a", "claimCode": "label-pc-a7"},
			{"deviceId": "pc-n", "deviceCert": devCert}, {"deviceId": "pc-g", "claimCode": "label-pc-g7"}})
		if status, body := s.call(acme, "POST", "/api/v1/devices", "application/json", rows); status != 200 || body["accepted"] != float64(3) {
			t.Fatalf("upload: %d %v", status, body)
		}
		if status, body := s.call(acme, "POST", "/api/v1/handovers", "application/json",
			mustJSON(map[string]any{"subscriber": "alice", "deviceIds": []string{"pc-a"}})); status != 200 {
			t.Fatalf("hand over: %d %v", status, body)
		}

		// Alice releases pc-a and tries to take it back with the label.
		status, rel := s.call(alice, "POST", "/api/v1/devices/pc-a/release", "application/json", nil)
		newCode, _ := rel["claimCode"].(string)
		if status != 200 || len(newCode) != 19 {
			t.Fatalf("release: %d %v, want a new claim code", status, rel)
		}
		if status, _, body := s.claim(alice, "pc-a", "label-pc-a7"); status != 403 || errCode(body) != "wrong_claim_code" {
			t.Fatalf("alice reclaims with the label's code: %d %v, want 403 wrong_claim_code", status, body)
		}
		if status, _, body := s.claim(bob, "pc-a", "label-pc-a7"); status != 403 {
			t.Fatalf("bob with the label's code: %d %v, want 403", status, body)
		}
		if status, b, body := s.claim(bob, "pc-a", newCode); status != 201 || b.Token == "" {
			t.Fatalf("bob with the new code: %d %v", status, body)
		}
		// newClaimCode false: no code at all, the device's key is left.
		if status, body := s.call(bob, "POST", "/api/v1/devices/pc-a/release", "application/json", []byte(`{"newClaimCode":false}`)); status != 200 || body["claimCode"] != nil {
			t.Fatalf("release without a code: %d %v", status, body)
		}
		if status, _, body := s.claim(bob, "pc-a", newCode); status != 404 {
			t.Fatalf("bob's code after a release without one: %d %v, want 404", status, body)
		}

		// pc-n: released by its manufacturer, claimable by the device's key.
		if status, body := s.call(acme, "POST", "/api/v1/devices/pc-n/release", "application/json", nil); status != 200 {
			t.Fatalf("release pc-n: %d %v", status, body)
		}
		carolProof := s.nonceProof(carol, "pc-n", devKey)
		bobProof := s.nonceProof(bob, "pc-n", devKey) // must not cancel carol's
		if status, body := s.call(bob, "POST", "/api/v1/devices/pc-n/enrolments", "application/json",
			mustJSON(map[string]any{"proof": carolProof})); status != 403 || errCode(body) != "bad_nonce" {
			t.Fatalf("bob with carol's nonce: %d %v, want 403 bad_nonce", status, body)
		}
		if status, body := s.call(carol, "POST", "/api/v1/devices/pc-n/enrolments", "application/json",
			mustJSON(map[string]any{"proof": carolProof})); status != 201 {
			t.Fatalf("carol's signed nonce after bob asked for one: %d %v", status, body)
		}
		if status, body := s.call(bob, "POST", "/api/v1/devices/pc-n/enrolments", "application/json",
			mustJSON(map[string]any{"proof": bobProof})); status != 404 {
			t.Fatalf("bob after carol claimed it: %d %v, want 404", status, body)
		}

		// pc-g: mallory guesses until she is held; carol's right code
		// still claims it.
		status, rel = s.call(acme, "POST", "/api/v1/devices/pc-g/release", "application/json", nil)
		code, _ := rel["claimCode"].(string)
		if status != 200 || code == "" {
			t.Fatalf("release pc-g: %d %v", status, rel)
		}
		held := false
		for i := range 12 {
			status, _, body := s.claim(mallory, "pc-g", "GUESS-0000-0000-000"+string(rune('A'+i)))
			if status == 429 && errCode(body) == "claim_locked" {
				held = true
				break
			}
			if status != 403 {
				t.Fatalf("mallory's guess %d: %d %v", i+1, status, body)
			}
		}
		if !held {
			t.Fatal("mallory was never held back")
		}
		if status, _, body := s.claim(mallory, "pc-g", code); status != 429 {
			t.Fatalf("mallory, held, with the right code: %d %v, want 429", status, body)
		}
		if status, _, body := s.claim(carol, "pc-g", code); status != 201 {
			t.Fatalf("carol's right code while mallory is held: %d %v", status, body)
		}
	})
}

// TestDeviceIDsPerManufacturer: two manufacturers upload the same device
// ID, on both registries. Both succeed, and an upload of an ID another
// manufacturer has answers exactly as one of a fresh ID; each sees only
// its own device; a claimant naming the ID with a claim code gets the
// device that code belongs to; naming it for a nonce needs the
// manufacturer when two are claimable.
func TestDeviceIDsPerManufacturer(t *testing.T) {
	onBothBackends(t, func(t *testing.T, _ string, env []string) {
		s := startSP(t, env...)
		acme := s.stakeholder("acme", "manufacturer")
		globex := s.stakeholder("globex", "manufacturer")
		bob := s.stakeholder("bob", "subscriber")
		carol := s.stakeholder("carol", "subscriber")
		upload := func(key, csv string) map[string]any {
			t.Helper()
			status, body := s.call(key, "POST", "/api/v1/devices", "text/csv", []byte(csv))
			if status != 200 {
				t.Fatalf("upload %q: %d %v", csv, status, body)
			}
			return body
		}
		upload(acme, "deviceId,claimCode\nsame-1,acme-code-71\nacme-only,acme-code-72\n")
		taken := upload(globex, "deviceId,claimCode\nsame-1,globex-code-73\n")
		fresh := upload(globex, "deviceId,claimCode\nglobex-only,globex-code-74\n")
		if fmt.Sprint(taken) != fmt.Sprint(fresh) || taken["accepted"] != float64(1) {
			t.Fatalf("an ID acme has answers %v, a fresh one %v: they must not differ", taken, fresh)
		}
		ids := map[string]string{}
		for name, key := range map[string]string{"acme": acme, "globex": globex} {
			status, dev := s.call(key, "GET", "/api/v1/devices/same-1", "", nil)
			if status != 200 || dev["deviceId"] != "same-1" {
				t.Fatalf("%s's same-1: %d %v", name, status, dev)
			}
			ids[name] = dev["manufacturerId"].(string)
			status, list := s.call(key, "GET", "/api/v1/devices", "", nil)
			devs, _ := list["devices"].([]any)
			if status != 200 || len(devs) != 2 {
				t.Fatalf("%s lists %d %v, want its own two", name, status, list)
			}
			for _, d := range devs {
				if d.(map[string]any)["manufacturerId"] != ids[name] {
					t.Fatalf("%s lists another manufacturer's device: %v", name, d)
				}
			}
		}
		if ids["acme"] == ids["globex"] {
			t.Fatalf("one manufacturer ID for both: %v", ids)
		}
		if status, body := s.call(globex, "GET", "/api/v1/devices/acme-only", "", nil); status != 404 {
			t.Fatalf("globex reads acme's device: %d %v", status, body)
		}
		if status, body := s.call(globex, "GET", "/api/v1/devices/same-1@"+ids["acme"], "", nil); status != 404 {
			t.Fatalf("globex names acme's same-1: %d %v", status, body)
		}

		// Both release their same-1; each release hands out its own code.
		codes := map[string]string{}
		for name, key := range map[string]string{"acme": acme, "globex": globex} {
			status, rel := s.call(key, "POST", "/api/v1/devices/same-1/release", "application/json", nil)
			if status != 200 || rel["claimCode"] == nil {
				t.Fatalf("%s releases same-1: %d %v", name, status, rel)
			}
			codes[name] = rel["claimCode"].(string)
		}
		if status, body := s.call(bob, "POST", "/api/v1/devices/same-1/nonce", "application/json", nil); status != 409 || errCode(body) != "ambiguous_device_id" {
			t.Fatalf("a nonce for a device ID two manufacturers released: %d %v, want 409 ambiguous_device_id", status, body)
		}
		// The claim code picks the device it belongs to.
		for _, tc := range []struct {
			who, key, maker string
		}{{"bob", bob, "globex"}, {"carol", carol, "acme"}} {
			if status, _, body := s.claim(tc.key, "same-1", codes[tc.maker]); status != 201 {
				t.Fatalf("%s claims same-1 with %s's code: %d %v", tc.who, tc.maker, status, body)
			}
			status, dev := s.call(tc.key, "GET", "/api/v1/devices/same-1", "", nil)
			if status != 200 || dev["manufacturerId"] != ids[tc.maker] {
				t.Fatalf("%s's same-1: %d %v, want %s's", tc.who, status, dev, tc.maker)
			}
		}
		// Each manufacturer's view: its same-1 is gone to its claimant.
		for name, key := range map[string]string{"acme": acme, "globex": globex} {
			if status, _ := s.call(key, "GET", "/api/v1/devices/same-1", "", nil); status != 404 {
				t.Fatalf("%s still sees same-1 after the claim: %d", name, status)
			}
		}
	})
}
