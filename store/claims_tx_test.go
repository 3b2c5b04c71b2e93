package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// claimToken issues a token for dev by a correct claim code of stakeholder
// (account limit 10, device limit 5), in one transaction.
func claimToken(s *Store, dev, stakeholder string, now time.Time) error {
	e := Enrolment{TokenHash: randomBytes(32), DeviceID: dev, AssignedID: "S" + dev, StakeholderID: stakeholder, Tenant: "m1",
		ExpectTenant: "m1", Mode: ModeUntrusted, ExpiresAt: now.Add(time.Hour), CreatedAt: now}
	return s.IssueToken(context.Background(), e, &ClaimCheck{StakeholderID: stakeholder, Now: now, DeviceMax: 5, StakeholderMax: 10, LockFor: time.Hour},
		&AuditEvent{At: now, Tenant: "m1", Actor: stakeholder, Action: "device.token_issued", Subject: dev, Detail: map[string]any{}})
}

// TestClaimBookkeepingInTheToken: the one-transaction token keeps the
// budget rules of ClaimAttempt and ClaimSuccess (see
// TestClaimSuccessKeepsAccountBudget): a correct code clears the device's
// count, never the account's; a wrong code counts against both, with its
// audit event; a locked device or account refuses even the right code and
// writes nothing, neither token nor audit event.
func TestClaimBookkeepingInTheToken(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		ctx := context.Background()
		if _, err := s.UpsertDevices(ctx, "m1", []Device{{ID: "own"}, {ID: "victim"}, {ID: "third"}}, t0); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateStakeholder(ctx, Stakeholder{ID: "m1", Name: "m1", Role: RoleManufacturer, CreatedAt: t0}); err != nil {
			t.Fatal(err)
		}
		wrong := func(dev string, now time.Time) error {
			return s.ClaimFailure(ctx, dev, "m1", now, 5, 10, time.Hour,
				AuditEvent{At: now, Tenant: "m1", Actor: "m1", Action: "device.claim_failure", Subject: dev, Detail: map[string]any{}})
		}
		// Device limit 5: four wrong codes, a right one, four more: the
		// device's count was cleared by the token.
		for round := range 2 {
			for i := range 4 {
				if err := wrong("own", t0); err != nil {
					t.Fatalf("round %d wrong code %d: %v", round, i, err)
				}
			}
			if err := claimToken(s, "own", "m1", t0); err != nil {
				t.Fatalf("round %d right code: %v", round, err)
			}
		}
		// The account has spent 8 of 10: two more wrong codes lock it
		// (the 10th locks), and then even the right code is refused.
		for i := range 2 {
			if err := wrong("victim", t0); err != nil {
				t.Fatalf("account attempt %d: %v", 9+i, err)
			}
		}
		if err := wrong("victim", t0); !errors.Is(err, ErrClaimLocked) {
			t.Fatalf("wrong code on a locked account: %v, want ErrClaimLocked", err)
		}
		if err := claimToken(s, "third", "m1", t0); !errors.Is(err, ErrClaimLocked) {
			t.Fatalf("right code on a locked account: %v, want ErrClaimLocked", err)
		}
		if locked, err := s.ClaimLocked(ctx, "third", "m1", t0); err != nil || !locked {
			t.Fatalf("ClaimLocked: %v %v, want locked", locked, err)
		}
		if es, err := s.Enrolments(ctx, "third"); err != nil || len(es) != 0 {
			t.Fatalf("the refused token was written: %v %v", es, err)
		}
		events, err := s.AuditOf(ctx, "", []string{"own", "victim", "third"})
		if err != nil {
			t.Fatal(err)
		}
		count := map[string]int{}
		for _, e := range events {
			count[e.Subject+" "+e.Action]++
		}
		if want := map[string]int{"own device.claim_failure": 8, "own device.token_issued": 2, "victim device.claim_failure": 2}; fmt.Sprint(count) != fmt.Sprint(want) {
			t.Fatalf("audit trail %v, want %v", count, want)
		}
		// The lock expires; a right code then goes through.
		if err := claimToken(s, "third", "m1", t0.Add(2*time.Hour)); err != nil {
			t.Fatalf("after the lock expired: %v", err)
		}
	})
}

// TestClaimFailuresUnderConcurrency: 50 parallel wrong codes of one account
// against a device ceiling of 5 are counted 6 times (the sixth, past the
// ceiling, locks the account); the other 44 are refused as locked, so none
// of them tells its sender anything about its code.
func TestClaimFailuresUnderConcurrency(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		ctx := context.Background()
		if _, err := s.UpsertDevices(ctx, "m1", []Device{{ID: "claim-dev"}}, t0); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateStakeholder(ctx, Stakeholder{ID: "stakeholder-x", Name: "x", Role: RoleSubscriber, CreatedAt: t0}); err != nil {
			t.Fatal(err)
		}
		var counted, locked atomic.Int64
		var wg sync.WaitGroup
		for range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				switch err := s.ClaimFailure(ctx, "claim-dev", "stakeholder-x", t0, 5, 25, time.Hour, AuditEvent{At: t0, Tenant: "m1",
					Actor: "x", Action: "device.claim_failure", Subject: "claim-dev", Detail: map[string]any{}}); {
				case err == nil:
					counted.Add(1)
				case errors.Is(err, ErrClaimLocked):
					locked.Add(1)
				default:
					t.Errorf("claim failure: %v", err)
				}
			}()
		}
		wg.Wait()
		if counted.Load() != 6 || locked.Load() != 44 {
			t.Fatalf("%d wrong codes counted, %d refused as locked; want 6 and 44", counted.Load(), locked.Load())
		}
	})
}

// TestTokensRefusedOrWrittenWhole: concurrent token requests, some refused
// (a device that moved since the caller looked, an account locked by wrong
// claim codes), most not. On SQLite they share commits (groupCommit), on
// PostgreSQL each has its own: either way every accepted token is there
// with its audit event, and a refused one left no trace, not even its
// device's update.
func TestTokensRefusedOrWrittenWhole(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		ctx := context.Background()
		var devs []Device
		for i := range 40 {
			devs = append(devs, Device{ID: fmt.Sprintf("whole-%02d", i)})
		}
		if _, err := s.UpsertDevices(ctx, "m1", devs, t0); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateStakeholder(ctx, Stakeholder{ID: "m1", Name: "m1", Role: RoleManufacturer, CreatedAt: t0}); err != nil {
			t.Fatal(err)
		}
		// Devices 30-39 are asked for by an account locked by wrong codes.
		if err := s.CreateStakeholder(ctx, Stakeholder{ID: "eve", Name: "eve", Role: RoleSubscriber, CreatedAt: t0}); err != nil {
			t.Fatal(err)
		}
		for range 5 {
			if err := s.ClaimFailure(ctx, devs[30].ID, "eve", t0, 1000, 5, time.Hour, AuditEvent{At: t0, Tenant: "m1", Actor: "eve",
				Action: "device.claim_failure", Subject: devs[30].ID, Detail: map[string]any{}}); err != nil {
				t.Fatal(err)
			}
		}
		errs := make([]error, len(devs))
		var wg sync.WaitGroup
		for i, d := range devs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				e := Enrolment{TokenHash: randomBytes(32), DeviceID: d.ID, AssignedID: "S" + d.ID, StakeholderID: "m1", Tenant: "m1",
					ExpectTenant: "m1", Mode: ModeUntrusted, ExpiresAt: t0.Add(time.Hour), CreatedAt: t0}
				if i >= 20 && i < 30 {
					e.ExpectTenant = "someone-else" // moved since the caller read it
				}
				who := "m1"
				if i >= 30 {
					who = "eve"
				}
				errs[i] = s.IssueToken(ctx, e, &ClaimCheck{StakeholderID: who, Now: t0, DeviceMax: 5, StakeholderMax: 1000, LockFor: time.Hour},
					&AuditEvent{At: t0, Tenant: "m1", Actor: "m1", Action: "device.token_issued", Subject: d.ID, Detail: map[string]any{}})
			}()
		}
		wg.Wait()
		for i, d := range devs {
			want := error(nil)
			switch {
			case i >= 30:
				want = ErrClaimLocked
			case i >= 20:
				want = ErrNotFound
			}
			if !errors.Is(errs[i], want) || want == nil && errs[i] != nil {
				t.Errorf("%s: %v, want %v", d.ID, errs[i], want)
			}
			es, err := s.Enrolments(ctx, d.ID)
			if err != nil {
				t.Fatal(err)
			}
			dev, err := s.Device(ctx, d.ID)
			if err != nil {
				t.Fatal(err)
			}
			events, err := s.AuditOf(ctx, "", []string{d.ID})
			if err != nil {
				t.Fatal(err)
			}
			issued := 0
			for _, ev := range events {
				if ev.Action == "device.token_issued" {
					issued++
				}
			}
			if written := want == nil; written != (len(es) == 1) || written != (issued == 1) || written != (dev.State == DeviceTokenIssued) {
				t.Errorf("%s (%v): %d enrolments, %d token events, state %s", d.ID, want, len(es), issued, dev.State)
			}
		}
	})
}
