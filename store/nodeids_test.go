package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/credfactory/credfactory/store/storetest"
)

// TestSetNodeID: binding, the SP-wide uniqueness across tenants (409
// material, naming nothing of the other device), another tenant's
// device (not found), and the rule that a Node-ID named by an active
// Node-ID certificate or an open token does not change; every refusal
// changes nothing.
func TestSetNodeID(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		ctx := context.Background()
		a := newEnrolment(t, s, nil) // tenant-1, an open token
		if _, err := s.UpsertDevices(ctx, "maker-1", []Device{{ID: "dev-b"}}, t0); err != nil {
			t.Fatal(err)
		}
		const x, y = "urn:gsma:imei:90420156-025763-0", "urn:gsma:imei:90420156-025763-1"
		nodeOf := func(id string) string {
			d, err := s.Device(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if d.NodeID == nil {
				return ""
			}
			return *d.NodeID
		}
		set := func(dev, tenant, node string) error {
			_, err := s.SetNodeID(ctx, NodeIDChange{DeviceID: dev, Tenant: tenant, NodeID: node, Actor: "test", Now: t0.Add(time.Minute)})
			return err
		}

		// A first binding is allowed with a token open: nothing can be
		// issued for a device without a Node-ID.
		d, err := s.SetNodeID(ctx, NodeIDChange{DeviceID: a.DeviceID, Tenant: "tenant-1", NodeID: x, Actor: "alice", Now: t0.Add(time.Minute)})
		if err != nil || d.NodeID == nil || *d.NodeID != x || nodeOf(a.DeviceID) != x {
			t.Fatalf("bind: %+v %v", d, err)
		}
		if err := set(a.DeviceID, "tenant-1", x); err != nil {
			t.Fatalf("binding the same Node-ID again: %v", err)
		}
		trail, err := s.Audit(ctx, "tenant-1", a.DeviceID)
		if err != nil || len(slices.DeleteFunc(trail, func(e AuditEvent) bool { return e.Action != "device.node_id_set" })) != 1 {
			t.Fatalf("audit trail %+v %v", trail, err)
		}

		for _, tc := range []struct {
			name, dev, tenant, node string
			want                    error
		}{
			{"another tenant's device", a.DeviceID, "maker-1", y, ErrNotFound},
			{"a device that does not exist", "dev-none", "tenant-1", y, ErrNotFound},
			{"a Node-ID another tenant's device holds", "dev-b", "maker-1", x, ErrNodeIDTaken},
			{"a change with a token open", a.DeviceID, "tenant-1", y, ErrNodeIDInUse},
			{"clearing with a token open", a.DeviceID, "tenant-1", "", ErrNodeIDInUse},
		} {
			err := set(tc.dev, tc.tenant, tc.node)
			if !errors.Is(err, tc.want) {
				t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
			}
			if errors.Is(err, ErrNodeIDTaken) && strings.Contains(err.Error(), a.DeviceID) {
				t.Errorf("%s: the error names the other device: %v", tc.name, err)
			}
		}
		// Past the token's expiry, before the sweep marks it: an enrolment
		// that read the Node-ID just before the token expired may still be
		// signing, and redeems against the time it read.
		if _, err := s.SetNodeID(ctx, NodeIDChange{DeviceID: a.DeviceID, Tenant: "tenant-1", NodeID: y, Actor: "alice",
			Now: a.ExpiresAt.Add(time.Millisecond)}); !errors.Is(err, ErrNodeIDInUse) {
			t.Errorf("a change just past the token's expiry, before the sweep: %v, want %v", err, ErrNodeIDInUse)
		}
		if nodeOf(a.DeviceID) != x || nodeOf("dev-b") != "" {
			t.Fatalf("a refusal changed something: %q %q", nodeOf(a.DeviceID), nodeOf("dev-b"))
		}

		// Redeemed for a Node-ID certificate: the Node-ID stays while it
		// is active, and is free once it is revoked.
		c := certCredential()
		c.ID = "34-" + strings.TrimPrefix(c.ID, "33-")
		if _, err := s.Redeem(ctx, redemption(a, c)); err != nil {
			t.Fatal(err)
		}
		if err := set(a.DeviceID, "tenant-1", y); !errors.Is(err, ErrNodeIDInUse) {
			t.Fatalf("change under an active Node-ID certificate: %v", err)
		}
		if _, err := s.Revoke(ctx, Revocation{ID: c.ID, DeviceID: a.DeviceID, Reason: 4, At: t0.Add(2 * time.Minute), Actor: "alice", Tenant: "tenant-1"}); err != nil {
			t.Fatal(err)
		}
		if err := set(a.DeviceID, "tenant-1", ""); err != nil || nodeOf(a.DeviceID) != "" {
			t.Fatalf("clear after revocation: %v", err)
		}
		if err := set("dev-b", "maker-1", x); err != nil || nodeOf("dev-b") != x {
			t.Fatalf("the freed Node-ID to another device: %v", err)
		}

		// Two devices racing for one Node-ID: one wins.
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, dev := range []string{a.DeviceID, "dev-c"} {
			if i == 1 {
				if _, err := s.UpsertDevices(ctx, "maker-1", []Device{{ID: dev}}, t0); err != nil {
					t.Fatal(err)
				}
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = set(dev, "", "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6")
			}()
		}
		wg.Wait()
		if ok := (errs[0] == nil) != (errs[1] == nil); !ok || !errors.Is(errors.Join(errs...), ErrNodeIDTaken) {
			t.Fatalf("race: %v", errs)
		}
	})
}

// TestPendingMigrations: migration 13 ships after 16, so a registry at
// version 16 may lack it; Pending names it, and Migrate adds it.
func TestPendingMigrations(t *testing.T) {
	storetest.Each(t, func(t *testing.T, url string) {
		ctx := context.Background()
		s, err := Open(ctx, url, Options{MaxConns: 4})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		without := slices.DeleteFunc(slices.Clone(migrations), func(m migration) bool { return m.version == 13 })
		if _, err := s.migrate(ctx, without); err != nil {
			t.Fatal(err)
		}
		v, err := s.Version(ctx)
		pending, perr := s.Pending(ctx)
		if err != nil || perr != nil || v != SchemaVersion() || fmt.Sprint(pending) != "[13]" {
			t.Fatalf("version %d %v, pending %v %v", v, err, pending, perr)
		}
		if applied, err := s.Migrate(ctx); err != nil || fmt.Sprint(applied) != "[13]" {
			t.Fatalf("migrate: %v %v", applied, err)
		}
		if pending, err := s.Pending(ctx); err != nil || len(pending) != 0 {
			t.Fatalf("pending after migrate: %v %v", pending, err)
		}
	})
}
