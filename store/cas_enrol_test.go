package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/credfactory/credfactory/crlreason"
)

// TestCreateEnrolmentComparesTenant: the portal read the device in one
// tenant; if it moved meanwhile (a forced release), the token is refused
// instead of moving the device back with its withdrawn assigned ID.
func TestCreateEnrolmentComparesTenant(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		ctx := context.Background()
		e := newEnrolment(t, s, nil)
		if _, err := s.Release(ctx, Release{DeviceID: e.DeviceID, Reason: crlreason.AffiliationChanged, Actor: "admin", At: t0.Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
		again := e
		again.TokenHash, again.ExpectTenant, again.CreatedAt = randomBytes(32), e.Tenant, t0.Add(2*time.Minute)
		if err := s.CreateEnrolment(ctx, again); !errors.Is(err, ErrNotFound) {
			t.Fatalf("a re-request for the tenant the device left: %v, want ErrNotFound", err)
		}
		d, err := s.Device(ctx, e.DeviceID)
		if err != nil {
			t.Fatal(err)
		}
		if d.Tenant != "maker-1" || d.AssignedID != nil || d.OwnerID != nil {
			t.Fatalf("the refused enrolment moved the device: %+v", d)
		}
		// A claim that saw it where it is now goes through.
		claim := e
		claim.TokenHash, claim.Tenant, claim.ExpectTenant, claim.AssignedID = randomBytes(32), "tenant-2", "maker-1", "Sfresh"
		if err := s.CreateEnrolment(ctx, claim); err != nil {
			t.Fatalf("a claim that saw the current tenant: %v", err)
		}
	})
}
