package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// listAll pages through DevicesWithCredentials as a client would, with the
// cursor the listing gives (the last device: ID and manufacturer).
func listAll(t *testing.T, s *Store, tenant string, f DeviceFilter) []DeviceCredentials {
	t.Helper()
	var all []DeviceCredentials
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatal("the listing never ends")
		}
		page, more, err := s.DevicesWithCredentials(context.Background(), tenant, f)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, page...)
		if !more {
			return all
		}
		last := page[len(page)-1]
		f.After, f.AfterManufacturer = last.DeviceID, last.ManufacturerID
	}
}

// TestDevicesWithCredentials: the one-query listing holds, for every
// device of the tenant, exactly the credentials the device page reads one
// device at a time (CredentialsOf, the oracle), whatever the page size;
// another tenant's devices and credentials never appear; a tenant holding
// one device ID from two manufacturers gets both wherever a page ends.
func TestDevicesWithCredentials(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		ctx := context.Background()
		// tenant-1's enrolled devices (maker-1's, claimed by tenant-1).
		var enrolled []Credential
		for i := 0; i < 5; i++ {
			enrolled = append(enrolled, enrolCert(t, s, t0.Add(365*24*time.Hour)))
		}
		// A second, active credential on one device; a revoked one on
		// another; a credential of another tenant on a third (a previous
		// owner's history, hidden from tenant-1).
		extra := certCredential()
		extra.DeviceID, extra.AssignedID, extra.Tenant, extra.Status = enrolled[0].DeviceID, enrolled[0].AssignedID, "tenant-1", StatusActive
		if err := s.RegisterCredential(ctx, extra); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Revoke(ctx, Revocation{ID: enrolled[1].ID, Reason: 1, At: t0.Add(time.Hour), Actor: "test"}); err != nil {
			t.Fatal(err)
		}
		foreign := certCredential()
		foreign.DeviceID, foreign.AssignedID, foreign.Tenant, foreign.Status = enrolled[2].DeviceID, "S-old", "tenant-old", StatusActive
		if err := s.RegisterCredential(ctx, foreign); err != nil {
			t.Fatal(err)
		}
		// Another tenant's devices: maker-2's own, one of them of an ID
		// tenant-1 holds too.
		if _, err := s.UpsertDevices(ctx, "maker-2", []Device{{ID: enrolled[3].DeviceID}, {ID: "m2-only"}}, t0); err != nil {
			t.Fatal(err)
		}
		// Pre-enrolled devices of maker-1, no credentials.
		if _, err := s.UpsertDevices(ctx, "maker-1", []Device{{ID: "bare-1"}, {ID: "bare-2"}}, t0); err != nil {
			t.Fatal(err)
		}

		summary := func(cs []CredentialSummary) []string {
			var out []string
			for _, c := range cs {
				out = append(out, c.ID+" "+c.Status+" "+fmt.Sprintf("%x", c.CertSHA256))
			}
			return out
		}
		oracle := func(tenant string, d Device) []string {
			cs, err := s.CredentialsOf(ctx, d.ID, tenant)
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, c := range cs {
				out = append(out, c.ID+" "+c.Status+" "+fmt.Sprintf("%x", c.CertSHA256))
			}
			return out
		}
		for _, tc := range []struct {
			name    string
			tenant  string
			f       DeviceFilter
			devices int
		}{
			{"tenant-1, pages of 1", "tenant-1", DeviceFilter{Limit: 1}, 5},
			{"tenant-1, pages of 2", "tenant-1", DeviceFilter{Limit: 2}, 5},
			{"tenant-1, one page", "tenant-1", DeviceFilter{Limit: 1000}, 5},
			{"tenant-1 enrolled only", "tenant-1", DeviceFilter{State: DeviceEnrolled, Limit: 2}, 5},
			{"maker-1 (nothing enrolled is its own)", "maker-1", DeviceFilter{Limit: 1}, 2},
			{"maker-2", "maker-2", DeviceFilter{Limit: 1}, 2},
			{"sp-admin, pages of 1", "", DeviceFilter{Limit: 1}, 9},
			{"sp-admin, prefix", "", DeviceFilter{IDPrefix: "bare-", Limit: 1}, 2},
		} {
			t.Run(tc.name, func(t *testing.T) {
				all := listAll(t, s, tc.tenant, tc.f)
				if len(all) != tc.devices {
					t.Fatalf("%d devices, want %d", len(all), tc.devices)
				}
				seen := map[string]bool{}
				for i, d := range all {
					if seen[d.ID] {
						t.Fatalf("device %s listed twice", d.ID)
					}
					seen[d.ID] = true
					if tc.tenant != "" && d.Tenant != tc.tenant {
						t.Fatalf("%s sees %s's device %s", tc.tenant, d.Tenant, d.ID)
					}
					if i > 0 && strings.Compare(all[i-1].DeviceID+"\x00"+all[i-1].ManufacturerID, d.DeviceID+"\x00"+d.ManufacturerID) >= 0 {
						t.Fatalf("out of order: %s@%s after %s@%s", d.DeviceID, d.ManufacturerID, all[i-1].DeviceID, all[i-1].ManufacturerID)
					}
					if got, want := summary(d.Credentials), oracle(tc.tenant, d.Device); !slices.Equal(got, want) {
						t.Fatalf("device %s: listed %q, the device page has %q", d.ID, got, want)
					}
				}
			})
		}
		// What the oracle shows, spelled out: two active credentials on
		// the first device, a revoked one, the previous owner's hidden
		// from the tenant but not from an sp-admin.
		byID := map[string]DeviceCredentials{}
		for _, d := range listAll(t, s, "tenant-1", DeviceFilter{}) {
			byID[d.ID] = d
		}
		if cs := byID[enrolled[0].DeviceID].Credentials; len(cs) != 2 || cs[0].Status != StatusActive || cs[1].Status != StatusActive {
			t.Errorf("the device with two active credentials: %+v", cs)
		}
		if cs := byID[enrolled[1].DeviceID].Credentials; len(cs) != 1 || cs[0].Status != StatusRevoked {
			t.Errorf("the revoked device: %+v", cs)
		}
		if cs := byID[enrolled[2].DeviceID].Credentials; len(cs) != 1 || cs[0].ID != enrolled[2].ID || *cs[0].Serial != *enrolled[2].Serial {
			t.Errorf("the transferred device shows %+v to its new owner", cs)
		}
		for _, d := range listAll(t, s, "", DeviceFilter{}) {
			if d.ID == enrolled[2].DeviceID && len(d.Credentials) != 2 {
				t.Errorf("an sp-admin sees %d of the transferred device's credentials, want 2", len(d.Credentials))
			}
		}
	})
}

// TestDevicesCursorNamesTheManufacturer: an sp-admin's listing holds one
// device ID from two manufacturers; a page that ends between them must not
// lose the second (the cursor is the device and its manufacturer).
func TestDevicesCursorNamesTheManufacturer(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		ctx := context.Background()
		for _, m := range []string{"m1", "m2", "m3"} {
			if _, err := s.UpsertDevices(ctx, m, []Device{{ID: "a"}, {ID: "dup"}, {ID: "z"}}, t0); err != nil {
				t.Fatal(err)
			}
		}
		for _, limit := range []int{1, 2, 4} {
			f := DeviceFilter{Limit: limit}
			var got []string
			for {
				page, err := s.Devices(ctx, "", f)
				if err != nil {
					t.Fatal(err)
				}
				for _, d := range page {
					got = append(got, d.Ref())
				}
				if len(page) < limit {
					break
				}
				f.After, f.AfterManufacturer = page[len(page)-1].DeviceID, page[len(page)-1].ManufacturerID
			}
			want := []string{"a@m1", "a@m2", "a@m3", "dup@m1", "dup@m2", "dup@m3", "z@m1", "z@m2", "z@m3"}
			if !slices.Equal(got, want) {
				t.Errorf("pages of %d: %v, want %v", limit, got, want)
			}
		}
	})
}

// TestDevicesWithCredentialsBoundsAPage: a page holds at most
// maxListingCredentials credentials; it ends before the device that would
// cross it (which starts the next page, whole), and a device whose history
// alone is longer is refused with ErrHistoryTooLong, not cut.
func TestDevicesWithCredentialsBoundsAPage(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		ctx := context.Background()
		defer func(n int) { maxListingCredentials = n }(maxListingCredentials)
		maxListingCredentials = 3
		var creds []Credential
		for i := 0; i < 4; i++ {
			creds = append(creds, enrolCert(t, s, t0.Add(365*24*time.Hour)))
		}
		slices.SortFunc(creds, func(a, b Credential) int { return strings.Compare(a.DeviceID, b.DeviceID) })
		// The second device gets a second credential: the first page
		// (limit 1000) holds devices 1 and 2 (3 credentials) and ends.
		extra := certCredential()
		extra.DeviceID, extra.AssignedID, extra.Tenant, extra.Status = creds[1].DeviceID, creds[1].AssignedID, "tenant-1", StatusActive
		if err := s.RegisterCredential(ctx, extra); err != nil {
			t.Fatal(err)
		}
		page, more, err := s.DevicesWithCredentials(ctx, "tenant-1", DeviceFilter{Limit: 1000})
		if err != nil || !more || len(page) != 2 || len(page[1].Credentials) != 2 {
			t.Fatalf("a page at the bound: %d devices, more %v, %v", len(page), more, err)
		}
		all := listAll(t, s, "tenant-1", DeviceFilter{Limit: 1000})
		n := 0
		for _, d := range all {
			n += len(d.Credentials)
		}
		if len(all) != 4 || n != 5 {
			t.Fatalf("paged at the bound: %d devices, %d credentials; want 4, 5", len(all), n)
		}
		// Three more on the last device: its history alone passes the bound.
		for i := 0; i < 3; i++ {
			c := certCredential()
			c.DeviceID, c.AssignedID, c.Tenant, c.Status = creds[3].DeviceID, creds[3].AssignedID, "tenant-1", StatusActive
			if err := s.RegisterCredential(ctx, c); err != nil {
				t.Fatal(err)
			}
		}
		f := DeviceFilter{After: creds[2].DeviceID, AfterManufacturer: "maker-1"}
		if _, _, err := s.DevicesWithCredentials(ctx, "tenant-1", f); !errors.Is(err, ErrHistoryTooLong) {
			t.Fatalf("a device with a history longer than a page: %v", err)
		}
	})
}

// TestDevicesWithCredentialsUsesIndexes: the listing reads the page's
// devices on a keyset index that leads with the tenant (the device ID
// index for an sp-admin) and each device's credentials on
// credentials_device, never a whole table, on both engines. (Without
// statistics SQLite may take (tenant, device_id) over (tenant, state,
// device_id) and filter the state: either keeps a page a range read.)
func TestDevicesWithCredentialsUsesIndexes(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		for _, tc := range []struct {
			name   string
			tenant string
			f      DeviceFilter
			index  string
		}{
			{"tenant, state, cursor", "tenant-1", DeviceFilter{State: DeviceEnrolled, IDPrefix: "bench-", After: "bench-1", AfterManufacturer: "m", Limit: 1000}, "devices_tenant_"},
			{"tenant", "tenant-1", DeviceFilter{After: "x", Limit: 1000}, "devices_tenant_"},
			{"sp-admin", "", DeviceFilter{After: "x", AfterManufacturer: "m", Limit: 1000}, "devices_device_id"},
		} {
			q, args, _ := devicesWithCredentialsSQL(s.Backend(), tc.tenant, tc.f)
			plan := explain(t, s, q, args...)
			for _, want := range []string{tc.index, "credentials_device"} {
				if !strings.Contains(plan, want) {
					t.Errorf("%s: the listing does not use %s:\n%s", tc.name, want, plan)
				}
			}
			for _, scan := range []string{"SCAN devices", "SCAN c\n", "Seq Scan"} {
				if strings.Contains(plan+"\n", scan) {
					t.Errorf("%s: the listing scans a table (%q):\n%s", tc.name, scan, plan)
				}
			}
			t.Logf("%s:\n%s", tc.name, plan)
		}
	})
}

// BenchmarkDevicesWithCredentials pages through a factory's registry
// (100,000 enrolled devices of one tenant, a certificate each) in pages of
// 1,000, as a reconciliation does: one iteration is the whole registry.
func BenchmarkDevicesWithCredentials(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) { benchmarkDevicesWithCredentials(b, openSQLiteForTest(b, nil)) })
	b.Run("postgres", func(b *testing.B) { benchmarkDevicesWithCredentials(b, openPostgresForTest(b, nil)) })
}

func benchmarkDevicesWithCredentials(b *testing.B, s *Store) {
	const n = 100_000
	ctx := context.Background()
	devs := make([]Device, n)
	for i := range devs {
		devs[i] = Device{ID: fmt.Sprintf("bench-%07d", i)}
	}
	if _, err := s.UpsertDevices(ctx, "maker", devs, t0); err != nil {
		b.Fatal(err)
	}
	for _, part := range chunked(devs, 1000) {
		var stmts []stmt
		for _, d := range part {
			c := certCredential()
			c.DeviceID, c.AssignedID, c.Tenant, c.Status = d.ID, "S"+d.ID, "maker", StatusActive
			ins, err := insertCredentialStmt(c)
			if err != nil {
				b.Fatal(err)
			}
			stmts = append(stmts, ins, stmt{`UPDATE devices SET state = 'enrolled', assigned_id = $2 WHERE id = $1`, []any{d.ID, c.AssignedID}, 1})
		}
		if err := s.tx(ctx, "bench_setup", func(q querier) error { return execBatch(ctx, q, stmts) }); err != nil {
			b.Fatal(err)
		}
	}
	{ // The plan of a page in the middle, as the engine runs it (-v shows it).
		q, args, _ := devicesWithCredentialsSQL(s.Backend(), "maker", DeviceFilter{State: DeviceEnrolled, IDPrefix: "bench-", After: "bench-0050000", AfterManufacturer: "maker", Limit: 1000})
		prefix := "EXPLAIN QUERY PLAN "
		if s.Backend() != "sqlite" {
			prefix = "EXPLAIN ANALYZE "
		}
		var plan []string
		_ = s.read(ctx, func(qr querier) error {
			return queryEach(ctx, qr, prefix+q, args, func(r rows) error {
				cols := make([]any, 4)
				if s.Backend() != "sqlite" {
					cols = cols[:1]
				}
				for i := range cols {
					cols[i] = new(any)
				}
				err := r.Scan(cols...)
				plan = append(plan, fmt.Sprint(*cols[len(cols)-1].(*any)))
				return err
			})
		})
		b.Logf("plan:\n%s", strings.Join(plan, "\n"))
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f := DeviceFilter{State: DeviceEnrolled, IDPrefix: "bench-", Limit: 1000}
		got, pages := 0, 0
		start := time.Now()
		for {
			page, more, err := s.DevicesWithCredentials(ctx, "maker", f)
			if err != nil {
				b.Fatal(err)
			}
			pages++
			for _, d := range page {
				got += len(d.Credentials)
			}
			if !more {
				break
			}
			f.After, f.AfterManufacturer = page[len(page)-1].DeviceID, page[len(page)-1].ManufacturerID
		}
		if got != n {
			b.Fatalf("%d credentials listed, want %d", got, n)
		}
		b.ReportMetric(float64(time.Since(start).Microseconds())/float64(pages), "us/page")
	}
}
