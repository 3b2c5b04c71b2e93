package store

import (
	"context"
	"crypto/sha256"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// BenchmarkRedeem measures token redemptions (redeem + record credential,
// one durable commit each or shared) on both backends at 1/8/64 concurrent
// writers, with and without group commit. Run with a fixed count, e.g.
// -benchtime 3000x, so setup (not timed) stays bounded.
func BenchmarkRedeem(b *testing.B) {
	type backend struct {
		name string
		open func(b *testing.B, obs Observer) *Store
	}
	for _, be := range []backend{
		{"sqlite", func(b *testing.B, obs Observer) *Store { return openSQLiteForTest(b, obs) }},
		{"postgres", func(b *testing.B, obs Observer) *Store { return openPostgresForTest(b, obs) }},
	} {
		for _, batched := range []bool{false, true} {
			for _, writers := range []int{1, 8, 64} {
				b.Run(fmt.Sprintf("%s/batched=%v/writers=%d", be.name, batched, writers), func(b *testing.B) {
					obs := &countingObserver{}
					s := be.open(b, obs)
					enrolments := bulkEnrolments(b, s, b.N)
					redeem := s.Redeem
					if batched {
						bt := s.NewBatcher(BatchOptions{})
						defer bt.Close()
						redeem = bt.Redeem
					}
					var next atomic.Int64
					var wg sync.WaitGroup
					cpu0 := processCPU(b)
					b.ResetTimer()
					for w := 0; w < writers; w++ {
						wg.Add(1)
						go func() {
							defer wg.Done()
							for {
								i := int(next.Add(1)) - 1
								if i >= len(enrolments) {
									return
								}
								if _, err := redeem(context.Background(), redemption(enrolments[i], certCredential())); err != nil {
									b.Error(err)
									return
								}
							}
						}()
					}
					wg.Wait()
					b.StopTimer()
					// The time per op includes waiting for fsync and for the
					// other writers; the process's CPU per redemption is
					// what a redemption costs the machine.
					b.ReportMetric(float64((processCPU(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
					txs, retries, batches := obs.snapshot()
					b.ReportMetric(float64(retries["redeem"]+retries["redeem_batch"])/float64(b.N), "retries/op")
					if len(batches) > 0 {
						b.ReportMetric(float64(b.N)/float64(len(batches)), "items/batch")
					}
					secs := b.Elapsed().Seconds()
					b.ReportMetric(float64(b.N)/secs, "redemptions/s")
					b.ReportMetric(float64(txs["redeem"]+txs["redeem_batch"])/secs, "commits/s")
				})
			}
		}
	}
}

// processCPU is the user and system CPU time this process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// bulkEnrolments stores n issued tokens in a few large transactions.
func bulkEnrolments(b testing.TB, s *Store, n int) []Enrolment {
	b.Helper()
	out := make([]Enrolment, 0, n)
	for start := 0; start < n; start += 500 {
		end := min(start+500, n)
		var chunk []Enrolment
		for i := start; i < end; i++ {
			h := sha256.Sum256(randomBytes(32))
			id := fmt.Sprintf("bench-%x", randomBytes(6))
			chunk = append(chunk, Enrolment{TokenHash: h[:], DeviceID: id, AssignedID: "S" + id, StakeholderID: "stk",
				Tenant: "tenant", Mode: ModeUntrusted, ExpiresAt: t0.Add(24 * time.Hour), CreatedAt: t0, State: EnrolmentIssued})
		}
		err := s.tx(context.Background(), "bench_setup", func(q querier) error {
			for _, e := range chunk {
				if _, err := q.exec(context.Background(), `INSERT INTO enrolments (`+enrolmentColumns+`)
					VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL, NULL, NULL, NULL)`,
					e.TokenHash, e.DeviceID, e.AssignedID, e.StakeholderID, e.Tenant, e.OBFID, e.Mode,
					e.DeviceCertSHA256, e.ExpiresAt, e.State, e.CreatedAt); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		out = append(out, chunk...)
	}
	return out
}

// BenchmarkSweepChunk measures one expiry-sweep chunk (lease renewal and a
// conditional UPDATE of 1,000 due rows, one serializable transaction) on
// both backends, for tokens and credentials. The table holds b.N chunks'
// worth of due rows plus as many not yet due, which the partial index
// skips. Run with a fixed count, e.g. -benchtime 5x.
func BenchmarkSweepChunk(b *testing.B) {
	const chunk = 1000
	for _, be := range []struct {
		name string
		open func(b *testing.B, obs Observer) *Store
	}{
		{"sqlite", func(b *testing.B, obs Observer) *Store { return openSQLiteForTest(b, obs) }},
		{"postgres", func(b *testing.B, obs Observer) *Store { return openPostgresForTest(b, obs) }},
	} {
		for _, kind := range sweepKinds {
			b.Run(be.name+"/"+kind.name, func(b *testing.B) {
				s := be.open(b, nil)
				now := t0.Add(48 * time.Hour)
				insertDue(b, s, b.N*chunk, now.Add(-time.Second))
				insertDue(b, s, b.N*chunk, now.Add(time.Hour))
				opt := SweepOptions{Holder: "bench", Chunk: chunk, Now: now, LeaseTTL: time.Hour}
				if ok, err := s.TakeLease(context.Background(), SweepLease, opt.Holder, opt.LeaseTTL, time.Now()); err != nil || !ok {
					b.Fatal(ok, err)
				}
				b.ResetTimer()
				for range b.N {
					n, err := s.sweepChunk(context.Background(), kind, opt)
					if err != nil || n != chunk {
						b.Fatalf("chunk swept %d rows: %v", n, err)
					}
				}
				b.StopTimer()
				b.ReportMetric(float64(b.N*chunk)/b.Elapsed().Seconds(), "rows/s")
			})
		}
	}
}

// TestEnrolmentsOfTokens: a forwarded batch's read returns every known
// token across the IN list's chunks, and nothing for an unknown one.
func TestEnrolmentsOfTokens(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		es := bulkEnrolments(t, s, 1200)
		unknown := sha256.Sum256([]byte("never issued"))
		hashes := [][]byte{unknown[:]}
		for _, e := range es {
			hashes = append(hashes, e.TokenHash)
		}
		got, err := s.EnrolmentsOfTokens(context.Background(), hashes)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(es) {
			t.Fatalf("%d enrolments for %d known tokens", len(got), len(es))
		}
		if _, ok := got[string(unknown[:])]; ok {
			t.Fatal("an unknown token has an enrolment")
		}
		for _, e := range []Enrolment{es[0], es[777], es[len(es)-1]} {
			if g := got[string(e.TokenHash)]; g.DeviceID != e.DeviceID || g.State != EnrolmentIssued {
				t.Fatalf("token of %s: got %+v", e.DeviceID, g)
			}
		}
	})
}
