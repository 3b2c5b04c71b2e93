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
