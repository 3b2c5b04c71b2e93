package store

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/credfactory/credfactory/crlreason"
)

// BenchmarkRevokeDevice measures revoking all of one device's credentials
// (16 of them: a set-based UPDATE ... RETURNING plus one pipelined batch of
// audit rows) and releasing a device with as many, on both backends. Run
// with a fixed count, e.g. -benchtime 200x: setup is not timed.
func BenchmarkRevokeDevice(b *testing.B) {
	const perDevice = 16
	for _, be := range []struct {
		name string
		open func(b *testing.B) *Store
	}{
		{"sqlite", func(b *testing.B) *Store { return openSQLiteForTest(b, nil) }},
		{"postgres", func(b *testing.B) *Store { return openPostgresForTest(b, nil) }},
	} {
		for _, op := range []string{"revoke", "release"} {
			b.Run(be.name+"/"+op, func(b *testing.B) {
				s := be.open(b)
				ctx := context.Background()
				devices := make([]string, b.N)
				for i := range devices {
					devices[i] = fmt.Sprintf("rv-%x", randomBytes(6))
				}
				if _, err := s.UpsertDevices(ctx, "maker", devicesOf(devices), t0); err != nil {
					b.Fatal(err)
				}
				err := s.tx(ctx, "bench_setup", func(q querier) error {
					for _, d := range devices {
						e := Enrolment{DeviceID: d, AssignedID: "S" + d, Tenant: "maker"}
						for j := 0; j < perDevice; j++ {
							c := pskCredential(e, []int{22, 23, 24, 25}[j%4])
							if err := insertCredential(ctx, q, c); err != nil {
								return err
							}
						}
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					var n int
					if op == "revoke" {
						ids, err := s.Revoke(ctx, Revocation{DeviceID: devices[i], Reason: crlreason.KeyCompromise, At: t0.Add(time.Hour), Actor: "bench"})
						if err != nil {
							b.Fatal(err)
						}
						n = len(ids)
					} else {
						out, err := s.Release(ctx, Release{DeviceID: devices[i], Reason: crlreason.AffiliationChanged, At: t0.Add(time.Hour), Actor: "bench"})
						if err != nil {
							b.Fatal(err)
						}
						n = len(out.Revoked)
					}
					if n != perDevice {
						b.Fatalf("revoked %d, want %d", n, perDevice)
					}
				}
			})
		}
	}
}

func devicesOf(ids []string) []Device {
	out := make([]Device, len(ids))
	for i, id := range ids {
		out[i] = Device{ID: id}
	}
	return out
}
