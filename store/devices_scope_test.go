package store

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/credfactory/credfactory/store/storetest"
)

// TestDeviceIDsPerManufacturer: two manufacturers upload the same device
// ID and both succeed with the same answer as for a fresh ID; each lists
// and hands over only its own; the registry keys differ (the second is
// scoped) while both keep the device ID; re-uploads are idempotent for
// both.
func TestDeviceIDsPerManufacturer(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		ctx := context.Background()
		if err := s.CreateStakeholder(ctx, Stakeholder{ID: "sub", Name: "sub", Role: RoleSubscriber, CreatedAt: t0}); err != nil {
			t.Fatal(err)
		}
		upload := func(m string, want Upserted, ids ...string) {
			t.Helper()
			var ds []Device
			for _, id := range ids {
				ds = append(ds, Device{ID: id, ClaimCodeHash: []byte(m + id)})
			}
			out, err := s.UpsertDevices(ctx, m, ds, t0)
			if err != nil {
				t.Fatalf("%s uploads %v: %v", m, ids, err)
			}
			for i, o := range out {
				if o != want {
					t.Fatalf("%s uploads %s: outcome %d, want %d", m, ids[i], o, want)
				}
			}
		}
		upload("m1", Inserted, "dup-1", "only-1")
		upload("m2", Inserted, "dup-1", "only-2") // the same answer as for a free ID
		upload("m1", Unchanged, "dup-1", "only-1")
		upload("m2", Unchanged, "dup-1", "only-2")

		named, err := s.DevicesNamed(ctx, "dup-1")
		if err != nil || len(named) != 2 {
			t.Fatalf("devices named dup-1: %+v %v", named, err)
		}
		keys := map[string]string{}
		for _, d := range named {
			if d.DeviceID != "dup-1" || string(d.ClaimCodeHash) != d.ManufacturerID+"dup-1" {
				t.Fatalf("device %+v", d)
			}
			keys[d.ManufacturerID] = d.ID
		}
		if keys["m1"] != "dup-1" || keys["m2"] != "m2/dup-1" {
			t.Fatalf("registry keys %v", keys)
		}
		for _, tc := range []struct {
			tenant string
			want   []string
		}{{"m1", []string{"dup-1", "only-1"}}, {"m2", []string{"dup-1", "only-2"}}} {
			ds, err := s.Devices(ctx, tc.tenant, DeviceFilter{})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, d := range ds {
				if d.ManufacturerID != tc.tenant {
					t.Fatalf("%s lists %+v", tc.tenant, d)
				}
				got = append(got, d.DeviceID)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("%s lists %v, want %v", tc.tenant, got, tc.want)
			}
			page, err := s.Devices(ctx, tc.tenant, DeviceFilter{IDPrefix: "dup", After: ""})
			if err != nil || len(page) != 1 || page[0].ManufacturerID != tc.tenant {
				t.Fatalf("%s prefix dup: %+v %v", tc.tenant, page, err)
			}
		}
		// m2 hands over its dup-1 (and names m1's only-1, not its own):
		// one device moves, m1's stay.
		n, err := s.HandOver(ctx, "m2", "sub", []string{"dup-1", "only-1"}, "m2", t0)
		if err != nil || n != 1 {
			t.Fatalf("hand over: %d %v", n, err)
		}
		if d, _ := s.Device(ctx, "m2/dup-1"); d.Tenant != "sub" {
			t.Fatalf("m2's dup-1 after the hand-over: %+v", d)
		}
		for _, id := range []string{"dup-1", "only-1"} {
			if d, _ := s.Device(ctx, id); d.Tenant != "m1" {
				t.Fatalf("m1's %s moved: %+v", id, d)
			}
		}
		events, err := s.Audit(ctx, "sub", "m2/dup-1")
		if err != nil || len(events) != 1 || events[0].Action != "device.hand_over" {
			t.Fatalf("hand-over audit: %+v %v", events, err)
		}
	})
}

// TestMigrationScopesExistingDevices: a registry as the previous release
// left it (devices keyed by their device ID alone, an enrolment pointing
// at one) gets device_id from its key; nothing pointing at a device moves;
// its manufacturer's re-upload is still recognised, and another
// manufacturer may now upload the same ID.
func TestMigrationScopesExistingDevices(t *testing.T) {
	storetest.Each(t, func(t *testing.T, url string) {
		ctx := context.Background()
		s, err := Open(ctx, url, Options{MaxConns: 8})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		before := slices.IndexFunc(migrations, func(m migration) bool { return m.version == 16 })
		if _, err := s.migrate(ctx, migrations[:before]); err != nil {
			t.Fatal(err)
		}
		// old-1 and old-2, and enough others that the backfill takes
		// several pages.
		ids := []string{"old-1", "old-2"}
		for i := range 2300 {
			ids = append(ids, fmt.Sprintf("bulk-old-%05d", i))
		}
		if err := s.tx(ctx, "test", func(q querier) error {
			for _, id := range ids {
				if _, err := q.exec(ctx, `INSERT INTO devices (id, manufacturer_id, tenant, claim_code_hash, state, created_at, updated_at)
					VALUES ($1, 'm1', 'm1', $2, 'pre-enrolled', $3, $3)`, id, []byte("code-"+id), t0); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		e := Enrolment{TokenHash: randomBytes(32), DeviceID: "old-1", AssignedID: "Sold1", StakeholderID: "m1", Tenant: "m1",
			ExpectTenant: "m1", Mode: ModeUntrusted, ExpiresAt: t0.Add(time.Hour), CreatedAt: t0}
		if err := s.CreateEnrolment(ctx, e); err != nil {
			t.Fatal(err)
		}
		applied, err := s.Migrate(ctx)
		if err != nil || !slices.Contains(applied, 16) {
			t.Fatalf("migrate: %v %v", applied, err)
		}
		var backfilled int
		if err := s.read(ctx, func(q querier) error {
			return q.queryRow(ctx, `SELECT COUNT(*) FROM devices WHERE device_id = id`).Scan(&backfilled)
		}); err != nil || backfilled != len(ids) {
			t.Fatalf("rows with device_id = id: %d %v", backfilled, err)
		}
		d, err := s.Device(ctx, "old-1")
		if err != nil || d.DeviceID != "old-1" || d.State != DeviceTokenIssued || string(d.ClaimCodeHash) != "code-old-1" {
			t.Fatalf("old-1 after the migration: %+v %v", d, err)
		}
		if es, err := s.Enrolments(ctx, "old-1"); err != nil || len(es) != 1 {
			t.Fatalf("old-1's enrolment after the migration: %+v %v", es, err)
		}
		out, err := s.UpsertDevices(ctx, "m1", []Device{{ID: "old-1"}, {ID: "old-2"}}, t0)
		if err != nil || out[0] != Unchanged || out[1] != Unchanged {
			t.Fatalf("m1 re-uploads its devices: %v %v", out, err)
		}
		out, err = s.UpsertDevices(ctx, "m2", []Device{{ID: "old-2"}}, t0)
		if err != nil || out[0] != Inserted {
			t.Fatalf("m2 uploads old-2: %v %v", out, err)
		}
		if named, err := s.DevicesNamed(ctx, "old-2"); err != nil || len(named) != 2 {
			t.Fatalf("devices named old-2: %+v %v", named, err)
		}
	})
}
