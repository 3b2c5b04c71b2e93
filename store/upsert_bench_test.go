package store

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkUpsertDevices measures bulk pre-enrolment: 10,000 new devices
// per iteration, in the store's chunks.
func BenchmarkUpsertDevices(b *testing.B) {
	for _, be := range []struct {
		name string
		open func(b *testing.B) *Store
	}{
		{"sqlite", func(b *testing.B) *Store { return openSQLiteForTest(b, nil) }},
		{"postgres", func(b *testing.B) *Store { return openPostgresForTest(b, nil) }},
	} {
		b.Run(be.name, func(b *testing.B) {
			s := be.open(b)
			for i := 0; i < b.N; i++ {
				rows := make([]Device, 10000)
				for j := range rows {
					rows[j] = Device{ID: fmt.Sprintf("bench-%d-%07d", i, j), ClaimCodeHash: randomBytes(32)}
				}
				if _, err := s.UpsertDevices(context.Background(), "m1", rows, time.Now()); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*10000)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

// BenchmarkDevicesPage lists one 50-device page of a tenant holding
// 1,000,000 devices: first page, a deep page (keyset cursor), a state filter
// and an ID-prefix search. Setup (not timed) stores the million.
func BenchmarkDevicesPage(b *testing.B) {
	for _, be := range []struct {
		name string
		open func(b *testing.B) *Store
	}{
		{"sqlite", func(b *testing.B) *Store { return openSQLiteForTest(b, nil) }},
		{"postgres", func(b *testing.B) *Store { return openPostgresForTest(b, nil) }},
	} {
		b.Run(be.name, func(b *testing.B) {
			s := be.open(b)
			const n = 1000000
			for start := 0; start < n; start += 20000 {
				rows := make([]Device, 20000)
				for j := range rows {
					rows[j] = Device{ID: fmt.Sprintf("line-%07d", start+j)}
				}
				if _, err := s.UpsertDevices(context.Background(), "m1", rows, time.Now()); err != nil {
					b.Fatal(err)
				}
			}
			for _, f := range []struct {
				name string
				f    DeviceFilter
			}{
				{"first", DeviceFilter{Limit: 50}},
				{"deep", DeviceFilter{After: "line-0876543", Limit: 50}},
				{"deep, device cursor", DeviceFilter{After: "line-0876543", AfterManufacturer: "m1", Limit: 50}},
				{"state", DeviceFilter{State: DevicePreEnrolled, After: "line-0500000", Limit: 50}},
				{"prefix", DeviceFilter{IDPrefix: "line-09999", Limit: 50}},
			} {
				b.Run(f.name, func(b *testing.B) {
					for i := 0; i < b.N; i++ {
						ds, err := s.Devices(context.Background(), "m1", f.f)
						if err != nil || len(ds) == 0 {
							b.Fatalf("%d devices, %v", len(ds), err)
						}
					}
				})
			}
		})
	}
}
