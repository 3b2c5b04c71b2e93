package store

import (
	"context"
	"testing"
	"time"

	"github.com/credfactory/credfactory/crlreason"
)

// TestDeviceHistoryByTenant: the device page's enrolments and credentials
// are the viewer's tenant's only; "" (an sp-admin) sees all.
func TestDeviceHistoryByTenant(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		ctx := context.Background()
		e, _ := enrolledDevice(t, s, 22)
		if _, err := s.Release(ctx, Release{DeviceID: e.DeviceID, Tenant: e.Tenant, Reason: crlreason.AffiliationChanged, Actor: "alice", At: t0.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		claim := e
		claim.TokenHash, claim.Tenant, claim.AssignedID, claim.CreatedAt = randomBytes(32), "tenant-2", "Snew", t0.Add(2*time.Hour)
		if err := s.CreateEnrolment(ctx, claim); err != nil {
			t.Fatal(err)
		}
		for tenant, want := range map[string]int{"tenant-2": 1, "maker-1": 0, "tenant-1": 1, "": 2} {
			got, err := s.EnrolmentsOf(ctx, e.DeviceID, tenant)
			if err != nil || len(got) != want {
				t.Fatalf("%q sees %d enrolments (%v), want %d", tenant, len(got), err, want)
			}
			for _, en := range got {
				if tenant != "" && en.Tenant != tenant {
					t.Fatalf("%q sees %s's enrolment", tenant, en.Tenant)
				}
			}
		}
		for tenant, want := range map[string]int{"tenant-1": 2, "tenant-2": 0, "": 2} {
			got, err := s.CredentialsOf(ctx, e.AssignedID, tenant)
			if err != nil || len(got) != want {
				t.Fatalf("%q sees %d credentials of the old assigned ID (%v), want %d", tenant, len(got), err, want)
			}
		}
	})
}
