package store

import (
	"context"
	"testing"
	"time"

	"github.com/credfactory/credfactory/crlreason"
)

// TestReleasedAt: a release marks the device released (claimable); a claim
// and a hand-over clear the mark.
func TestReleasedAt(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		ctx := context.Background()
		e := newEnrolment(t, s, nil)
		device := func() Device {
			d, err := s.Device(ctx, e.DeviceID)
			if err != nil {
				t.Fatal(err)
			}
			return d
		}
		if d := device(); d.ReleasedAt != nil {
			t.Fatalf("a device never released has released_at %v", d.ReleasedAt)
		}
		at := t0.Add(time.Hour)
		if _, err := s.Release(ctx, Release{DeviceID: e.DeviceID, Reason: crlreason.AffiliationChanged, Actor: "admin", At: at}); err != nil {
			t.Fatal(err)
		}
		if d := device(); d.ReleasedAt == nil || !d.ReleasedAt.Equal(at) {
			t.Fatalf("released_at after the release: %v, want %v", d.ReleasedAt, at)
		}
		claim := e
		claim.TokenHash, claim.Tenant, claim.AssignedID, claim.CreatedAt = randomBytes(32), "tenant-2", "Snew", at
		if err := s.CreateEnrolment(ctx, claim); err != nil {
			t.Fatal(err)
		}
		if d := device(); d.ReleasedAt != nil {
			t.Fatalf("released_at after the claim: %v", d.ReleasedAt)
		}
		// Released again to its manufacturer, then handed over.
		if _, err := s.Release(ctx, Release{DeviceID: e.DeviceID, Reason: crlreason.AffiliationChanged, Actor: "admin", At: at}); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateStakeholder(ctx, Stakeholder{ID: "sub-r", Name: "sub-r", Role: RoleSubscriber, CreatedAt: t0}); err != nil {
			t.Fatal(err)
		}
		if n, err := s.HandOver(ctx, "maker-1", "sub-r", []string{e.DeviceID}, "maker", at); err != nil || n != 1 {
			t.Fatalf("hand-over: %d %v", n, err)
		}
		if d := device(); d.ReleasedAt != nil {
			t.Fatalf("released_at after the hand-over: %v", d.ReleasedAt)
		}
	})
}
