package store

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestWrongCodesThrottleTheClaimantNotTheDevice: an attacker's wrong codes
// lock the attacker's account, never the device: the rightful claimant's
// correct code goes through while the attacker is held. Past the device's
// ceiling (5 wrong codes since its last successful claim) any claimant's
// next wrong code locks that claimant at once, so a second attacker
// account buys one guess; a claimant that has not failed is not affected.
func TestWrongCodesThrottleTheClaimantNotTheDevice(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		ctx := context.Background()
		if _, err := s.UpsertDevices(ctx, "m1", []Device{{ID: "target"}}, t0); err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{"eve", "mallory", "alice"} {
			if err := s.CreateStakeholder(ctx, Stakeholder{ID: id, Name: id, Role: RoleSubscriber, CreatedAt: t0}); err != nil {
				t.Fatal(err)
			}
		}
		wrong := func(who string) error {
			return s.ClaimFailure(ctx, "target", who, t0, 5, 25, time.Hour,
				AuditEvent{At: t0, Tenant: "m1", Actor: who, Action: "device.claim_failure", Subject: "target", Detail: map[string]any{}})
		}
		// eve: five wrong codes reach the device's ceiling; her sixth is
		// counted and locks her; from then on she is refused.
		for i := range 6 {
			if err := wrong("eve"); err != nil {
				t.Fatalf("eve's wrong code %d: %v", i+1, err)
			}
		}
		for range 20 {
			if err := wrong("eve"); !errors.Is(err, ErrClaimLocked) {
				t.Fatalf("eve after the ceiling: %v, want ErrClaimLocked", err)
			}
		}
		// mallory, a second account: one guess, then locked.
		if err := wrong("mallory"); err != nil {
			t.Fatalf("mallory's first wrong code: %v", err)
		}
		if err := wrong("mallory"); !errors.Is(err, ErrClaimLocked) {
			t.Fatalf("mallory's second wrong code: %v, want ErrClaimLocked", err)
		}
		if locked, err := s.ClaimLocked(ctx, "target", "alice", t0); err != nil || locked {
			t.Fatalf("alice is locked (%v, %v) by others' wrong codes", locked, err)
		}
		d, err := s.Device(ctx, "target")
		if err != nil || d.ClaimFailures != 7 {
			t.Fatalf("device's count %d (%v), want 7", d.ClaimFailures, err)
		}
		// alice, with the right code, claims the device under attack.
		if err := claimToken(s, "target", "alice", t0); err != nil {
			t.Fatalf("alice's correct code while the device is attacked: %v", err)
		}
		if d, err = s.Device(ctx, "target"); err != nil || d.ClaimFailures != 0 {
			t.Fatalf("device's count after the claim %d (%v), want 0", d.ClaimFailures, err)
		}
		// eve's lock expires with its window; she is slowed, not banned.
		if err := wrong("eve"); !errors.Is(err, ErrClaimLocked) {
			t.Fatalf("eve still within her lock: %v", err)
		}
		if err := s.ClaimFailure(ctx, "target", "eve", t0.Add(2*time.Hour), 5, 25, time.Hour,
			AuditEvent{At: t0, Tenant: "m1", Actor: "eve", Action: "device.claim_failure", Subject: "target", Detail: map[string]any{}}); err != nil {
			t.Fatalf("eve after her lock: %v", err)
		}
	})
}

// TestAccountBudgetAcrossDevices: an account mistyping across many devices
// is locked at its own limit although no device reached its ceiling, and
// the lock expires.
func TestAccountBudgetAcrossDevices(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		ctx := context.Background()
		if _, err := s.UpsertDevices(ctx, "m1", []Device{{ID: "acct-1"}, {ID: "acct-2"}, {ID: "acct-3"}, {ID: "acct-4"}}, t0); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateStakeholder(ctx, Stakeholder{ID: "y", Name: "y", Role: RoleSubscriber, CreatedAt: t0}); err != nil {
			t.Fatal(err)
		}
		wrong := func(dev string, now time.Time) error {
			return s.ClaimFailure(ctx, dev, "y", now, 5, 10, time.Hour,
				AuditEvent{At: now, Tenant: "m1", Actor: "y", Action: "device.claim_failure", Subject: dev, Detail: map[string]any{}})
		}
		for i, dev := range []string{"acct-1", "acct-1", "acct-1", "acct-1", "acct-2", "acct-2", "acct-2", "acct-2", "acct-3", "acct-3"} {
			if err := wrong(dev, t0); err != nil {
				t.Fatalf("wrong code %d on %s: %v", i+1, dev, err)
			}
		}
		if err := wrong("acct-4", t0); !errors.Is(err, ErrClaimLocked) {
			t.Fatalf("11th wrong code of the account, first on its device: %v, want ErrClaimLocked", err)
		}
		if err := wrong("acct-4", t0.Add(2*time.Hour)); err != nil {
			t.Fatalf("after the account's lock expired: %v", err)
		}
	})
}

// TestNoncesPerClaimant: two claimants' nonces for one device are both
// live; each is good once and only for the claimant it was issued to; a
// claimant's new nonce replaces its own; the device holds a bounded number,
// and expired ones make room.
func TestNoncesPerClaimant(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		ctx := context.Background()
		if _, err := s.UpsertDevices(ctx, "m1", []Device{{ID: "nd"}}, t0); err != nil {
			t.Fatal(err)
		}
		a, b, a2, c := randomBytes(32), randomBytes(32), randomBytes(32), randomBytes(32)
		exp := t0.Add(5 * time.Minute)
		set := func(who string, h []byte, now time.Time) error { return s.SetNonce(ctx, "nd", who, h, exp, now, 2) }
		if err := set("alice", a, t0); err != nil {
			t.Fatal(err)
		}
		if err := set("bob", b, t0); err != nil {
			t.Fatalf("bob's nonce: %v", err)
		}
		if err := set("carol", c, t0); !errors.Is(err, ErrTooManyNonces) {
			t.Fatalf("a third claimant past the cap of 2: %v, want ErrTooManyNonces", err)
		}
		if err := s.SetNonce(ctx, "no-such-device", "alice", c, exp, t0, 2); !errors.Is(err, ErrNotFound) {
			t.Fatalf("nonce for an unknown device: %v, want ErrNotFound", err)
		}
		if ok, err := s.TakeNonce(ctx, "nd", "bob", a, t0); err != nil || ok {
			t.Fatalf("bob took alice's nonce: %v %v", ok, err)
		}
		// alice asks again: her first nonce is replaced, bob's stays.
		if err := set("alice", a2, t0); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			who  string
			h    []byte
			want bool
		}{{"alice", a, false}, {"bob", b, true}, {"bob", b, false}, {"alice", a2, true}} {
			if ok, err := s.TakeNonce(ctx, "nd", tc.who, tc.h, t0); err != nil || ok != tc.want {
				t.Fatalf("%s take: %v %v, want %v", tc.who, ok, err, tc.want)
			}
		}
		// Expired nonces free their places.
		if err := set("alice", a, t0); err != nil {
			t.Fatal(err)
		}
		if err := set("bob", b, t0); err != nil {
			t.Fatal(err)
		}
		if err := s.SetNonce(ctx, "nd", "carol", c, exp.Add(5*time.Minute), exp.Add(time.Second), 2); err != nil {
			t.Fatalf("carol after the others expired: %v", err)
		}
		if ok, err := s.TakeNonce(ctx, "nd", "carol", c, exp.Add(time.Minute)); err != nil || !ok {
			t.Fatalf("carol's take: %v %v", ok, err)
		}
		if ok, err := s.TakeNonce(ctx, "nd", "carol", randomBytes(32), exp.Add(10*time.Minute)); err != nil || ok {
			t.Fatalf("unknown nonce taken: %v %v", ok, err)
		}
	})
}

// TestReleaseReplacesProof: a release withdraws the old proof of control:
// the claim code becomes the one the release brings (or none) and the
// device's outstanding nonces are dropped.
func TestReleaseReplacesProof(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		ctx := context.Background()
		old, fresh := randomBytes(32), randomBytes(32)
		if _, err := s.UpsertDevices(ctx, "m1", []Device{{ID: "rp", ClaimCodeHash: old}}, t0); err != nil {
			t.Fatal(err)
		}
		n := randomBytes(32)
		if err := s.SetNonce(ctx, "rp", "m1", n, t0.Add(time.Hour), t0, 4); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name string
			hash []byte
		}{{"a fresh code", fresh}, {"no code", nil}} {
			if _, err := s.Release(ctx, Release{DeviceID: "rp", Tenant: "m1", Reason: 3, Actor: "m1", At: t0, ClaimCodeHash: tc.hash}); err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			d, err := s.Device(ctx, "rp")
			if err != nil {
				t.Fatal(err)
			}
			if string(d.ClaimCodeHash) != string(tc.hash) || d.ReleasedAt == nil {
				t.Fatalf("%s: claim code hash %x released %v, want %x", tc.name, d.ClaimCodeHash, d.ReleasedAt, tc.hash)
			}
		}
		if ok, err := s.TakeNonce(ctx, "rp", "m1", n, t0); err != nil || ok {
			t.Fatalf("a nonce from before the release was taken: %v %v", ok, err)
		}
	})
}
