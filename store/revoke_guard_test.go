package store

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/credfactory/credfactory/crlreason"
)

// TestRevokeTenantGuard: a tenant's revocation touches only its own
// credentials, whatever happened to the device since the caller looked,
// and each audit event goes to the credential's own tenant.
func TestRevokeTenantGuard(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		ctx := context.Background()
		e, creds := enrolledDevice(t, s, 22, 10)
		at := t0.Add(time.Hour)
		// Another tenant (the device's next owner, or its last) revokes
		// "all" of the device: nothing of tenant-1's.
		got, err := s.Revoke(ctx, Revocation{DeviceID: e.DeviceID, Tenant: "tenant-2", Reason: crlreason.Unspecified, At: at, Actor: "bob"})
		if err != nil || len(got) != 0 {
			t.Fatalf("tenant-2 revoked %v (%v), want nothing", got, err)
		}
		if _, err := s.Revoke(ctx, Revocation{ID: creds[0].ID, DeviceID: e.DeviceID, Tenant: "tenant-2", Reason: crlreason.Unspecified, At: at, Actor: "bob"}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("tenant-2 revoking tenant-1's credential by ID: %v, want ErrNotFound", err)
		}
		if st := statuses(t, s, creds); slices.Contains(st, StatusRevoked) {
			t.Fatalf("another tenant's revocation revoked %v", st)
		}
		if events, _ := s.Audit(ctx, "tenant-2", e.DeviceID); len(events) != 0 {
			t.Fatalf("tenant-2's trail got %+v", events)
		}
		for _, id := range []string{creds[0].ID, creds[1].ID} {
			if events, _ := s.Audit(ctx, "tenant-2", id); len(events) != 0 {
				t.Fatalf("tenant-2's trail got %+v", events)
			}
		}
		// The owner's own revocation works, and so does an unscoped one.
		if got, err := s.Revoke(ctx, Revocation{DeviceID: e.DeviceID, SUIDs: []int{22}, Tenant: e.Tenant, Reason: crlreason.Unspecified, At: at, Actor: "alice"}); err != nil || len(got) != 1 {
			t.Fatalf("the owner's revocation: %v %v", got, err)
		}
		if got, err := s.Revoke(ctx, Revocation{DeviceID: e.DeviceID, Reason: crlreason.Unspecified, At: at, Actor: "admin"}); err != nil || len(got) != 2 {
			t.Fatalf("the sp-admin's revocation: %v %v", got, err)
		}
	})
}
