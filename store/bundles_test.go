package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// bulkFixture is a manufacturer with n pre-enrolled devices and a chunk
// asking a token for each.
func bulkFixture(t *testing.T, s *Store, n int) (BulkChunk, func(int, *Device) BulkDecision) {
	t.Helper()
	ctx := context.Background()
	maker := Stakeholder{ID: fmt.Sprintf("maker-%x", randomBytes(4)), Name: fmt.Sprintf("maker-%x", randomBytes(4)), Role: RoleManufacturer,
		PasswordHash: "x", CreatedAt: t0}
	if err := s.CreateStakeholder(ctx, maker); err != nil {
		t.Fatal(err)
	}
	var devs []Device
	c := BulkChunk{BatchKey: randomBytes(32), Fingerprint: randomBytes(32), StakeholderID: maker.ID, Actor: maker.Name, Now: t0,
		ClaimMaxFailures: 2, ClaimMaxFailuresAccount: 25, ClaimLockout: time.Hour}
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("bulk-%x-%04d", randomBytes(3), i)
		devs = append(devs, Device{ID: id, ClaimCodeHash: randomBytes(32)})
		c.Items = append(c.Items, BulkItem{DeviceID: id, TokenHash: randomBytes(32)})
	}
	if _, err := s.UpsertDevices(ctx, maker.ID, devs, t0); err != nil {
		t.Fatal(err)
	}
	grant := func(i int, d *Device) BulkDecision {
		if d == nil {
			return BulkDecision{Err: ErrNotFound}
		}
		return BulkDecision{Enrolment: Enrolment{AssignedID: "S" + d.ID, StakeholderID: maker.ID, Tenant: d.Tenant, Mode: ModeUntrusted,
			ExpiresAt: t0.Add(time.Hour)}, Audit: map[string]any{}}
	}
	return c, grant
}

func openTokens(t *testing.T, s *Store, deviceID string) int {
	t.Helper()
	es, err := s.Enrolments(context.Background(), deviceID)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range es {
		if e.State == EnrolmentIssued {
			n++
		}
	}
	return n
}

// TestIssueBulkRetries: a chunk records every token, device and audit event
// in one transaction; the same chunk again is a replay that writes nothing
// new; other rows under the same batch chunk are refused whole; and retries
// racing each other (a client that gave up too early, twice) still leave
// exactly one open token per device.
func TestIssueBulkRetries(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		ctx := context.Background()
		c, grant := bulkFixture(t, s, 600) // more than one IN list and one VALUES list
		outs, err := s.IssueBulk(ctx, c, grant)
		if err != nil {
			t.Fatal(err)
		}
		for i, o := range outs {
			if o.Err != nil || o.Replayed || o.Enrolment.AssignedID == "" {
				t.Fatalf("item %d: %+v", i, o)
			}
		}
		d, err := s.Device(ctx, c.Items[599].DeviceID)
		if err != nil || d.State != DeviceTokenIssued || d.AssignedID == nil || *d.AssignedID != "S"+d.ID {
			t.Fatalf("device after the chunk: %+v %v", d, err)
		}
		audit, err := s.Audit(ctx, d.Tenant, d.ID)
		if err != nil || len(audit) != 1 || audit[0].Action != "device.token_issued" {
			t.Fatalf("audit: %+v %v", audit, err)
		}

		again, err := s.IssueBulk(ctx, c, func(int, *Device) BulkDecision {
			t.Fatal("a replayed item was decided again")
			return BulkDecision{}
		})
		if err != nil {
			t.Fatal(err)
		}
		for i, o := range again {
			if !o.Replayed || o.Err != nil || o.Enrolment.AssignedID != outs[i].Enrolment.AssignedID {
				t.Fatalf("replayed item %d: %+v", i, o)
			}
		}
		other := c
		other.Fingerprint = randomBytes(32)
		if _, err := s.IssueBulk(ctx, other, grant); !errors.Is(err, ErrBatchMismatch) {
			t.Fatalf("same batch and chunk, other rows: %v", err)
		}

		// Eight racing attempts at a fresh chunk: every one answers every
		// item, each device ends with one open token.
		race, grant2 := bulkFixture(t, s, 50)
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		issued := make(chan int, 8)
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				outs, err := s.IssueBulk(ctx, race, grant2)
				if err != nil {
					errs <- err
					return
				}
				n := 0
				for _, o := range outs {
					if o.Err != nil {
						errs <- o.Err
						return
					}
					if !o.Replayed {
						n++
					}
				}
				issued <- n
			}()
		}
		wg.Wait()
		close(errs)
		close(issued)
		for err := range errs {
			t.Fatalf("racing retry: %v", err)
		}
		total := 0
		for n := range issued {
			total += n
		}
		if total != 50 {
			t.Fatalf("racing retries issued %d tokens for 50 devices", total)
		}
		for _, it := range race.Items {
			if n := openTokens(t, s, it.DeviceID); n != 1 {
				t.Fatalf("%s has %d open tokens", it.DeviceID, n)
			}
		}
	})
}

// TestIssueBulkRefusals: refused items write nothing of theirs, not even
// when they share the chunk with granted ones; wrong claim codes lock the
// account that sent them, never the device; a token of the batch that is no
// longer open is not answered again.
func TestIssueBulkRefusals(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		ctx := context.Background()
		c, grant := bulkFixture(t, s, 3)
		c.Items = append(c.Items, BulkItem{DeviceID: "no-such-device", TokenHash: randomBytes(32)})
		wrong := errors.New("wrong claim code")
		decide := func(i int, d *Device) BulkDecision {
			switch i {
			case 0:
				return BulkDecision{ClaimAttempt: true, Err: wrong}
			case 1:
				return BulkDecision{NonceHash: randomBytes(32)} // no nonce was issued
			}
			return grant(i, d)
		}
		outs, err := s.IssueBulk(ctx, c, decide)
		if err != nil {
			t.Fatal(err)
		}
		if !errors.Is(outs[0].Err, wrong) || !errors.Is(outs[1].Err, ErrNonceMismatch) || outs[2].Err != nil || !errors.Is(outs[3].Err, ErrNotFound) {
			t.Fatalf("outcomes: %+v", outs)
		}
		for _, i := range []int{0, 1} {
			if d, _ := s.Device(ctx, c.Items[i].DeviceID); d.State != DevicePreEnrolled || d.AssignedID != nil || openTokens(t, s, d.ID) != 0 {
				t.Fatalf("refused item %d wrote: %+v", i, d)
			}
		}
		// The second wrong code reaches the device's ceiling
		// (ClaimMaxFailures 2); the third locks the account at once, and
		// then even its right code is refused. The device is not locked:
		// another account's right code goes through.
		for k := 1; k <= 2; k++ {
			ck := c
			ck.Index, ck.Fingerprint, ck.Items = k, randomBytes(32), []BulkItem{{DeviceID: c.Items[0].DeviceID, TokenHash: randomBytes(32)}}
			if outs, err := s.IssueBulk(ctx, ck, decide); err != nil || !errors.Is(outs[0].Err, wrong) {
				t.Fatalf("wrong code %d: %+v %v", k+1, outs, err)
			}
		}
		c3 := c
		c3.Index, c3.Fingerprint, c3.Items = 3, randomBytes(32), []BulkItem{{DeviceID: c.Items[0].DeviceID, TokenHash: randomBytes(32)}}
		right := func(i int, d *Device) BulkDecision { dec := grant(i, d); dec.ClaimAttempt = true; return dec }
		if outs, err := s.IssueBulk(ctx, c3, right); err != nil || !errors.Is(outs[0].Err, ErrClaimLocked) {
			t.Fatalf("right code of a locked account: %+v %v", outs, err)
		}
		other := Stakeholder{ID: "bulk-other-" + c.StakeholderID, Name: "bulk-other-" + c.StakeholderID, Role: RoleManufacturer, PasswordHash: "x", CreatedAt: t0}
		if err := s.CreateStakeholder(ctx, other); err != nil {
			t.Fatal(err)
		}
		c4 := c3
		c4.BatchKey, c4.Index, c4.StakeholderID = randomBytes(32), 0, other.ID
		if outs, err := s.IssueBulk(ctx, c4, right); err != nil || outs[0].Err != nil {
			t.Fatalf("another account's right code on the attacked device: %+v %v", outs, err)
		}

		// Item 2's token, once cancelled by a newer one, is not answered
		// again by a retry of its batch.
		newer := c3
		newer.BatchKey, newer.Index, newer.Fingerprint = randomBytes(32), 0, randomBytes(32)
		newer.Items = []BulkItem{{DeviceID: c.Items[2].DeviceID, TokenHash: randomBytes(32)}}
		if outs, err := s.IssueBulk(ctx, newer, grant); err != nil || outs[0].Err != nil {
			t.Fatalf("newer token: %+v %v", outs, err)
		}
		if outs, err := s.IssueBulk(ctx, c, decide); err != nil || !errors.Is(outs[2].Err, ErrTokenCancelled) {
			t.Fatalf("retry after a newer token: %+v %v", outs, err)
		}
		if n := openTokens(t, s, c.Items[2].DeviceID); n != 1 {
			t.Fatalf("%d open tokens after the retry", n)
		}
	})
}

// BenchmarkIssueBulk records tokens a thousand devices per chunk, as the
// bulk route does; b.N chunks (make it 100x for 100,000 devices):
// go test ./store -run '^$' -bench IssueBulk -benchtime 100x
func BenchmarkIssueBulk(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) { benchmarkIssueBulk(b, openSQLiteForTest(b, nil)) })
	b.Run("postgres", func(b *testing.B) { benchmarkIssueBulk(b, openPostgresForTest(b, nil)) })
}

func benchmarkIssueBulk(b *testing.B, s *Store) {
	ctx := context.Background()
	maker := Stakeholder{ID: "maker-bench", Name: "maker-bench", Role: RoleManufacturer, PasswordHash: "x", CreatedAt: t0}
	if err := s.CreateStakeholder(ctx, maker); err != nil {
		b.Fatal(err)
	}
	const chunk = 1000
	chunks := make([]BulkChunk, b.N)
	batch := randomBytes(32)
	for i := range chunks {
		devs := make([]Device, chunk)
		c := BulkChunk{BatchKey: batch, Index: i, Fingerprint: randomBytes(32), StakeholderID: maker.ID, Actor: maker.Name, Now: t0,
			ClaimMaxFailures: 5, ClaimMaxFailuresAccount: 25, ClaimLockout: time.Hour}
		for j := range devs {
			devs[j].ID = fmt.Sprintf("bench-%03d-%04d", i, j)
			c.Items = append(c.Items, BulkItem{DeviceID: devs[j].ID, TokenHash: randomBytes(32)})
		}
		if _, err := s.UpsertDevices(ctx, maker.ID, devs, t0); err != nil {
			b.Fatal(err)
		}
		chunks[i] = c
	}
	grant := func(i int, d *Device) BulkDecision {
		return BulkDecision{Enrolment: Enrolment{AssignedID: fmt.Sprintf("S%x", randomBytes(13)), StakeholderID: maker.ID, Tenant: d.Tenant,
			Mode: ModeUntrusted, ExpiresAt: t0.Add(time.Hour)}, Audit: map[string]any{"mode": ModeUntrusted}}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.IssueBulk(ctx, chunks[i], grant); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*chunk)/b.Elapsed().Seconds(), "tokens/s")
}
