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
		// The new owner enrols: the device now has credentials of two
		// tenants under two assigned IDs.
		fresh, err := s.Redeem(ctx, redemption(claim, certCredential()))
		if err != nil {
			t.Fatal(err)
		}
		for tenant, want := range map[string]int{"tenant-1": 2, "tenant-2": 1, "": 3} {
			got, err := s.CredentialsOf(ctx, e.DeviceID, tenant)
			if err != nil || len(got) != want {
				t.Fatalf("%q sees %d of the device's credentials (%v), want %d", tenant, len(got), err, want)
			}
		}
		// An sp-admin's trail shows the release and the old credentials'
		// revocations (filed under each credential) next to the new owner's
		// enrolment; the new owner sees none of the old owner's.
		all, _ := s.CredentialsOf(ctx, e.DeviceID, "")
		subjects := []string{e.DeviceID}
		for _, c := range all {
			subjects = append(subjects, c.ID)
		}
		actions := func(tenant string) map[string]int {
			events, err := s.AuditOf(ctx, tenant, subjects)
			if err != nil {
				t.Fatal(err)
			}
			n := map[string]int{}
			for _, ev := range events {
				if tenant != "" && ev.Tenant != tenant {
					t.Fatalf("%q sees %s's event %s", tenant, ev.Tenant, ev.Action)
				}
				n[ev.Action]++
			}
			return n
		}
		if admin := actions(""); admin["device.release"] == 0 || admin["credential.revoke"] != 2 {
			t.Errorf("an sp-admin's trail: %v; want the release and two revocations", admin)
		}
		if owner := actions("tenant-2"); owner["credential.revoke"] != 0 || owner["device.release"] != 0 {
			t.Errorf("the new owner's trail: %v; want none of the old owner's events", owner)
		}
		_ = fresh
	})
}
