package store

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

// TestAPIKeyScopesCreatorAndCascade: a key keeps its scopes, creator and
// minting key; revoking a key revokes every key minted from it, down the
// tree, and nothing else; a revoked key mints nothing; last_used_at is
// written at most once a minute.
func TestAPIKeyScopesCreatorAndCascade(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		ctx := context.Background()
		for _, id := range []string{"st-a", "st-b"} {
			if err := s.CreateStakeholder(ctx, Stakeholder{ID: id, Name: id, Role: RoleSubscriber, PasswordHash: "x", CreatedAt: t0}); err != nil {
				t.Fatal(err)
			}
		}
		key := func(id, owner string, parent *string, scopes ...string) APIKey {
			t.Helper()
			k := APIKey{ID: id, StakeholderID: owner, Name: id, KeyHash: []byte("hash-" + id), CreatedAt: t0,
				Scopes: scopes, CreatedBy: "test", ParentKeyID: parent}
			if err := s.CreateAPIKey(ctx, k); err != nil {
				t.Fatal(err)
			}
			return k
		}
		root := key("root", "st-a", nil, "read", "keys")
		child := key("child", "st-a", &root.ID, "read", "keys")
		key("grandchild", "st-a", &child.ID, "read")
		key("sibling", "st-a", nil, "enrol")
		key("other", "st-b", nil, "read")

		got, _, err := s.APIKeyByHash(ctx, []byte("hash-child"))
		if err != nil || !slices.Equal(got.Scopes, []string{"read", "keys"}) || got.CreatedBy != "test" || got.ParentKeyID == nil || *got.ParentKeyID != "root" {
			t.Fatalf("child read back as %+v, %v", got, err)
		}

		if _, err := s.RevokeAPIKey(ctx, "st-b", "root", t0); !errors.Is(err, ErrNotFound) {
			t.Fatalf("another stakeholder revoked the key: %v", err)
		}
		ids, err := s.RevokeAPIKey(ctx, "st-a", "root", t0.Add(time.Minute))
		if err != nil || !slices.Equal(ids, []string{"root", "child", "grandchild"}) {
			t.Fatalf("revoked %v, %v; want root, child, grandchild", ids, err)
		}
		for id, alive := range map[string]bool{"root": false, "child": false, "grandchild": false, "sibling": true, "other": true} {
			_, _, err := s.APIKeyByHash(ctx, []byte("hash-"+id))
			if (err == nil) != alive {
				t.Errorf("%s: lookup %v, want alive=%v", id, err, alive)
			}
		}
		k := APIKey{ID: "late", StakeholderID: "st-a", Name: "late", KeyHash: []byte("hash-late"), CreatedAt: t0, ParentKeyID: &child.ID}
		if err := s.CreateAPIKey(ctx, k); !errors.Is(err, ErrNotFound) {
			t.Fatalf("a revoked key minted a key: %v", err)
		}

		used := func() *time.Time {
			t.Helper()
			k, _, err := s.APIKeyByHash(ctx, []byte("hash-sibling"))
			if err != nil {
				t.Fatal(err)
			}
			return k.LastUsedAt
		}
		for _, at := range []time.Time{t0, t0.Add(30 * time.Second)} {
			if err := s.TouchAPIKey(ctx, "sibling", at); err != nil {
				t.Fatal(err)
			}
		}
		if u := used(); u == nil || !u.Equal(t0) {
			t.Fatalf("last used %v after two uses within a minute, want the first (%v)", u, t0)
		}
		if err := s.TouchAPIKey(ctx, "sibling", t0.Add(2*time.Minute)); err != nil {
			t.Fatal(err)
		}
		if u := used(); u == nil || !u.Equal(t0.Add(2*time.Minute)) {
			t.Fatalf("last used %v, want %v", u, t0.Add(2*time.Minute))
		}
	})
}
