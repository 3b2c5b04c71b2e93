package store

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestClaimSuccessKeepsAccountBudget: a correct claim code clears the
// device's failure count, never the account's: an attacker who owns one
// device with a known code must not reset his guessing budget with it.
func TestClaimSuccessKeepsAccountBudget(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		ctx := context.Background()
		if _, err := s.UpsertDevices(ctx, "m1", []Device{{ID: "own"}, {ID: "victim"}}, t0); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateStakeholder(ctx, Stakeholder{ID: "eve", Name: "eve", Role: RoleSubscriber, CreatedAt: t0}); err != nil {
			t.Fatal(err)
		}
		attempt := func(dev string) error { return s.ClaimAttempt(ctx, dev, "eve", t0, 5, 10, time.Hour) }
		// Device limit 5: four attempts, a success, four more on the same
		// device: its count was cleared.
		for round := range 2 {
			for i := range 4 {
				if err := attempt("own"); err != nil {
					t.Fatalf("round %d attempt %d: %v", round, i, err)
				}
			}
			if err := s.ClaimSuccess(ctx, "own", "eve"); err != nil {
				t.Fatal(err)
			}
		}
		// Each success refunded its own attempt only: the account has
		// spent 6 of 10. Four more reach the limit (the 10th locks), the
		// next is refused, although the victim device is not locked.
		for i := range 4 {
			if err := attempt("victim"); err != nil {
				t.Fatalf("attempt %d of the account: %v", 7+i, err)
			}
		}
		if err := attempt("victim"); !errors.Is(err, ErrClaimLocked) {
			t.Fatalf("11th attempt of the account after two successes: %v, want ErrClaimLocked", err)
		}
		if err := s.ClaimAttempt(ctx, "victim", "eve", t0.Add(2*time.Hour), 5, 10, time.Hour); err != nil {
			t.Fatalf("after the account's lock expired: %v", err)
		}
	})
}
