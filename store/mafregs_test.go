package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestMAFKeyNeverOutlivesItsClient: key registrations racing their client's
// de-registration either land before it (and are deleted with it) or are
// refused; no key is left without its client, on either backend.
func TestMAFKeyNeverOutlivesItsClient(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		ctx := context.Background()
		if err := s.CreateStakeholder(ctx, Stakeholder{ID: "st-a", Name: "a", Role: RoleSubscriber, PasswordHash: "x", CreatedAt: t0}); err != nil {
			t.Fatal(err)
		}
		if err := s.AddAdminFQDN(ctx, "a.example", "st-a", "test", t0); err != nil {
			t.Fatal(err)
		}
		for round := range 5 {
			c := MAFClient{ID: fmt.Sprintf("reg-%d", round), ClientID: fmt.Sprintf("cse-%d.a.example", round), Tenant: "st-a",
				AdminFQDN: "a.example", SymmKeyID: fmt.Sprintf("c%d@maf.example", round), SecretSHA256: randomBytes(32),
				ExpiresAt: t0.Add(time.Hour), CreatedAt: t0, UpdatedAt: t0}
			if err := s.CreateMAFClient(ctx, c, "test"); err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			created := make(chan string, 8)
			for i := range 8 {
				wg.Go(func() {
					k := MAFKey{ID: fmt.Sprintf("k%d-%d@maf.example", round, i), Tenant: "st-a", AdminFQDN: "a.example", RegistrationID: c.ID,
						SUID: 33, TargetIDs: []string{"x"}, SealedKey: randomBytes(48), ExpiresAt: t0.Add(time.Hour), CreatedAt: t0}
					err := s.CreateMAFKey(ctx, k, "test")
					switch {
					case err == nil:
						created <- k.ID
					case !errors.Is(err, ErrNotFound):
						t.Errorf("register key %s: %v", k.ID, err)
					}
				})
			}
			wg.Go(func() {
				if _, err := s.DeleteMAFClient(ctx, "st-a", c.ID, "test", t0); err != nil {
					t.Errorf("de-register: %v", err)
				}
			})
			wg.Wait()
			close(created)
			for id := range created {
				if _, err := s.MAFKeyByID(ctx, id); !errors.Is(err, ErrNotFound) {
					t.Fatalf("round %d: key %s outlived its client: %v", round, id, err)
				}
			}
		}
		// And the tenant and adminFQDN checks, inside the transaction.
		if err := s.CreateStakeholder(ctx, Stakeholder{ID: "st-b", Name: "b", Role: RoleSubscriber, PasswordHash: "x", CreatedAt: t0}); err != nil {
			t.Fatal(err)
		}
		c := MAFClient{ID: "reg-b", ClientID: "cse.a.example", Tenant: "st-b", AdminFQDN: "a.example", SymmKeyID: "cb@maf.example",
			SecretSHA256: randomBytes(32), ExpiresAt: t0.Add(time.Hour), CreatedAt: t0, UpdatedAt: t0}
		if err := s.CreateMAFClient(ctx, c, "test"); !errors.Is(err, ErrNotOwned) {
			t.Fatalf("st-b registered under st-a's adminFQDN: %v", err)
		}
		if _, err := s.MAFClientBy(ctx, "id", "reg-b"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("a refused registration left a row: %v", err)
		}
	})
}
