package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/credfactory/credfactory/crlreason"
	"github.com/credfactory/credfactory/store/storetest"
)

// enrolCert redeems a fresh token for a certificate credential valid from
// t0 until notAfter and returns the recorded credential.
func enrolCert(t testing.TB, s *Store, notAfter time.Time) Credential {
	t.Helper()
	e := newEnrolment(t, s, nil)
	c := certCredential()
	c.NotAfter = notAfter
	got, err := s.Redeem(context.Background(), redemption(e, c))
	if err != nil {
		t.Fatal(err)
	}
	return got.Credential
}

// renewalOf is a renewal of old to a new certificate for public key pk.
func renewalOf(old Credential, pk []byte, now time.Time) Renewal {
	c := certCredential()
	if pk != nil {
		c.PublicKeySHA256 = pk
	}
	c.NotBefore, c.NotAfter = now, now.Add(365*24*time.Hour)
	return Renewal{OldID: old.ID, Credential: c, Now: now, Actor: "enrollee:" + old.AssignedID}
}

func mustCredential(t testing.TB, s *Store, id string) Credential {
	t.Helper()
	c, err := s.Credential(context.Background(), ByID, id)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRenew(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		ctx := context.Background()
		now := t0.Add(time.Hour)
		old := enrolCert(t, s, t0.Add(30*24*time.Hour))

		first, err := s.Renew(ctx, renewalOf(old, nil, now))
		if err != nil {
			t.Fatal(err)
		}
		if first.Replayed || first.Credential.AssignedID != old.AssignedID || first.Credential.DeviceID != old.DeviceID ||
			first.Credential.Tenant != old.Tenant || first.Credential.SUID != old.SUID || first.Credential.Status != StatusActive {
			t.Fatalf("renewed credential %+v", first)
		}
		// The old certificate is superseded (on the CRL) and stays as history.
		was := mustCredential(t, s, old.ID)
		if was.Status != StatusRevoked || was.RevocationReason == nil || *was.RevocationReason != crlreason.Superseded ||
			was.RevokedAt == nil || !was.RevokedAt.Equal(now) {
			t.Fatalf("old certificate after renewal: %s reason %v at %v", was.Status, was.RevocationReason, was.RevokedAt)
		}
		history, err := s.Credentials(ctx, old.AssignedID)
		if err != nil || len(history) != 2 {
			t.Fatalf("history: %d rows, %v", len(history), err)
		}
		audit, err := s.Audit(ctx, old.Tenant, first.Credential.ID)
		if err != nil || len(audit) != 1 || audit[0].Action != "credential.renew" || audit[0].Detail["supersedes"] != old.ID {
			t.Fatalf("audit: %+v %v", audit, err)
		}

		// A retry with the same old certificate and key (the answer was
		// lost) gets the same certificate; another key is a second renewal.
		retry, err := s.Renew(ctx, renewalOf(old, first.Credential.PublicKeySHA256, now.Add(time.Minute)))
		if err != nil || !retry.Replayed || retry.Credential.ID != first.Credential.ID {
			t.Fatalf("retry: %+v, %v", retry, err)
		}
		if _, err := s.Renew(ctx, renewalOf(old, nil, now)); !errors.Is(err, ErrCertSuperseded) {
			t.Fatalf("second renewal of a superseded certificate: %v", err)
		}
		// The new one renews in turn; then the first renewal's retry is stale.
		second, err := s.Renew(ctx, renewalOf(first.Credential, first.Credential.PublicKeySHA256, now.Add(2*time.Minute)))
		if err != nil || second.Replayed {
			t.Fatalf("renewing the renewed certificate: %v", err)
		}
		if _, err := s.Renew(ctx, renewalOf(old, first.Credential.PublicKeySHA256, now)); !errors.Is(err, ErrCertSuperseded) {
			t.Fatalf("retry after the successor was itself renewed: %v", err)
		}

		revoked := enrolCert(t, s, t0.Add(30*24*time.Hour))
		if _, err := s.Revoke(ctx, Revocation{ID: revoked.ID, Reason: 1, At: now, Actor: "test", Tenant: revoked.Tenant}); err != nil {
			t.Fatal(err)
		}
		expired := enrolCert(t, s, now.Add(-time.Second))
		window := enrolCert(t, s, now.Add(20*24*time.Hour))
		var tooEarly *TooEarlyError
		for _, tc := range []struct {
			name  string
			r     Renewal
			want  error
			check func(error) bool
		}{
			{"revoked", renewalOf(revoked, nil, now), ErrCertRevoked, nil},
			{"expired", renewalOf(expired, nil, now), ErrCertExpired, nil},
			{"unknown", Renewal{OldID: "33-unknown", Credential: certCredential(), Now: now}, ErrNotFound, nil},
			{"outside the window", func() Renewal { r := renewalOf(window, nil, now); r.RenewBefore = 7 * 24 * time.Hour; return r }(),
				ErrRenewTooEarly, func(err error) bool {
					return errors.As(err, &tooEarly) && tooEarly.Opens.Equal(window.NotAfter.Add(-7*24*time.Hour))
				}},
		} {
			_, err := s.Renew(ctx, tc.r)
			if !errors.Is(err, tc.want) || tc.check != nil && !tc.check(err) {
				t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
			}
		}
		// Refusals changed nothing.
		if c := mustCredential(t, s, window.ID); c.Status != StatusActive {
			t.Fatalf("a refused renewal touched the certificate: %s", c.Status)
		}
		// Inside the window it renews.
		r := renewalOf(window, nil, now)
		r.RenewBefore = 21 * 24 * time.Hour
		if _, err := s.Renew(ctx, r); err != nil {
			t.Fatalf("inside the window: %v", err)
		}
	})
}

// TestRenewConcurrent: concurrent renewals of one certificate produce one
// successor; those with its key get it back, the others are refused.
func TestRenewConcurrent(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		old := enrolCert(t, s, t0.Add(30*24*time.Hour))
		pkA, pkB := sha256.Sum256([]byte("a")), sha256.Sum256([]byte("b"))
		const n = 8
		results := make([]Renewed, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			pk := pkA[:]
			if i%2 == 1 {
				pk = pkB[:]
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i], errs[i] = s.Renew(context.Background(), renewalOf(old, pk, t0.Add(time.Hour)))
			}()
		}
		wg.Wait()
		issued := map[string]bool{}
		fresh := 0
		for i := range n {
			switch {
			case errs[i] == nil:
				issued[results[i].Credential.ID] = true
				if !results[i].Replayed {
					fresh++
				}
			case !errors.Is(errs[i], ErrCertSuperseded):
				t.Fatalf("renewal %d: %v", i, errs[i])
			}
		}
		if len(issued) != 1 || fresh != 1 {
			t.Fatalf("%d certificates answered, %d recorded fresh; want one", len(issued), fresh)
		}
		history, _ := s.Credentials(context.Background(), old.AssignedID)
		if len(history) != 2 {
			t.Fatalf("%d credentials recorded, want the old and one new", len(history))
		}
	})
}

// TestReRegistrationSupersedesKey: a shared key recorded for an assigned ID
// replaces the active one of the same usage and the same targets, in its
// transaction. Keys of SUIDs 23-25 are per target (TS-0003 §10.3: the Kuc
// context names targetIds[0]), so a key for another target stands.
func TestReRegistrationSupersedesKey(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		ctx := context.Background()
		first := newEnrolment(t, s, nil)
		psk := func(suid int, targets ...string) Credential {
			kid := fmt.Sprintf("%x@mef.example", randomBytes(8))
			return Credential{ID: "12-" + kid, Type: TypePSK, SUID: suid, KeyID: &kid, KeID: &kid, KDFContext: []byte("{}"),
				TargetIDs: targets, NotBefore: t0, NotAfter: t0.Add(24 * time.Hour), Source: SourceRSPF}
		}
		redeemed := 0
		redeem := func(c Credential) Credential {
			t.Helper()
			e := first // then a fresh token for the same device and assigned ID
			if redeemed++; redeemed > 1 {
				e = newEnrolment(t, s, func(e *Enrolment) { e.DeviceID, e.AssignedID = first.DeviceID, first.AssignedID })
			}
			got, err := s.Redeem(ctx, redemption(e, c))
			if err != nil {
				t.Fatal(err)
			}
			return got.Credential
		}
		// In order: each key is registered after the ones above it.
		old22 := redeem(psk(22))
		t1 := redeem(psk(23, "T1"))
		t2 := redeem(psk(23, "T2"))
		t1t2 := redeem(psk(23, "T1", "T2"))
		t2t1 := redeem(psk(23, "T2", "T1")) // the same targets in another order
		t1dat := redeem(psk(24, "T1"))
		new22 := redeem(psk(22))

		for _, tc := range []struct {
			name string
			id   string
			live bool
		}{
			{"SUID 22 key, re-registered", old22.ID, false},
			{"SUID 22 key that replaced it", new22.ID, true},
			{"SUID 23 key for T1, then one for T2", t1.ID, true},
			{"SUID 23 key for T2", t2.ID, true},
			{"SUID 23 key for T1,T2, then T2,T1", t1t2.ID, false},
			{"SUID 23 key for T2,T1", t2t1.ID, true},
			{"SUID 24 key for T1", t1dat.ID, true},
		} {
			c := mustCredential(t, s, tc.id)
			superseded := c.Status == StatusRevoked && c.RevocationReason != nil && *c.RevocationReason == crlreason.Superseded
			if tc.live && c.Status != StatusActive || !tc.live && !superseded {
				t.Errorf("%s: %s reason %v, want active %v", tc.name, c.Status, c.RevocationReason, tc.live)
			}
		}
		// Two re-registrations of one assigned ID cannot meet in one group
		// commit: a device has one open token (CreateEnrolment cancels the
		// others) and an assigned ID one device (devices.assigned_id is
		// unique), so the sequence above is the whole story.
	})
}

func ptr[T any](v T) *T { return &v }

// insertDue stores n credentials active until notAfter and n issued tokens
// open until the same instant, in pipelined batches.
func insertDue(t testing.TB, s *Store, n int, notAfter time.Time) (credIDs []string) {
	t.Helper()
	for start := 0; start < n; start += 500 {
		var writes []stmt
		for i := start; i < min(start+500, n); i++ {
			c := certCredential()
			c.AssignedID, c.DeviceID, c.Tenant, c.Status, c.CreatedAt = "Sdue", "dev-due", "tenant-1", StatusActive, t0
			c.NotAfter = notAfter
			ins, err := insertCredentialStmt(c)
			if err != nil {
				t.Fatal(err)
			}
			credIDs = append(credIDs, c.ID)
			h := sha256.Sum256(randomBytes(32))
			writes = append(writes, ins, stmt{`INSERT INTO enrolments (` + enrolmentColumns + `)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL, NULL, NULL, NULL)`,
				[]any{h[:], "dev-due", "Sdue", "stk", "tenant-1", nil, ModeUntrusted, nil, notAfter.UTC(), EnrolmentIssued, t0}, 1})
		}
		if err := s.tx(context.Background(), "test_setup", func(q querier) error { return execBatch(context.Background(), q, writes) }); err != nil {
			t.Fatal(err)
		}
	}
	return credIDs
}

func countBy(t testing.TB, s *Store, table, column string) map[string]int {
	t.Helper()
	out := map[string]int{}
	err := s.read(context.Background(), func(q querier) error {
		return queryEach(context.Background(), q, `SELECT `+column+`, COUNT(*) FROM `+table+` GROUP BY `+column, nil, func(r rows) error {
			var k string
			var n int
			err := r.Scan(&k, &n)
			out[k] = n
			return err
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestSweepChunks: more due rows than a chunk are all swept, in chunks of
// the configured size; rows not yet due and rows already revoked stay.
func TestSweepChunks(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, obs *countingObserver) {
		ctx := context.Background()
		now := t0.Add(48 * time.Hour)
		due := insertDue(t, s, 2300, now.Add(-time.Second))
		insertDue(t, s, 40, now.Add(time.Hour)) // not yet due
		if _, err := s.Revoke(ctx, Revocation{ID: due[0], Reason: 1, At: now, Actor: "test", Tenant: "tenant-1"}); err != nil {
			t.Fatal(err)
		}
		// A run is bounded (MaxChunks); the next run carries on.
		first, err := s.Sweep(ctx, SweepOptions{Holder: "replica-a", Chunk: 1000, Now: now, MaxChunks: 1})
		if err != nil || first.Tokens != 1000 || first.Credentials != 1000 {
			t.Fatalf("bounded sweep: %+v %v, want one chunk of each", first, err)
		}
		res, err := s.Sweep(ctx, SweepOptions{Holder: "replica-a", Chunk: 1000, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Held || first.Tokens+res.Tokens != 2300 || first.Credentials+res.Credentials != 2299 {
			t.Fatalf("sweeps: %+v then %+v, want 2300 tokens and 2299 credentials", first, res)
		}
		txs, _, _ := obs.snapshot()
		if txs["sweep_token"] != 3 || txs["sweep_credential"] != 3 {
			t.Fatalf("chunk transactions: %d token, %d credential; want 3 each (1000+1000+300)", txs["sweep_token"], txs["sweep_credential"])
		}
		if got := countBy(t, s, "credentials", "status"); got[StatusExpired] != 2299 || got[StatusActive] != 40 || got[StatusRevoked] != 1 {
			t.Fatalf("credential states after the sweep: %v", got)
		}
		if got := countBy(t, s, "enrolments", "state"); got[EnrolmentExpired] != 2300 || got[EnrolmentIssued] != 40 {
			t.Fatalf("token states after the sweep: %v", got)
		}
		if c := mustCredential(t, s, due[0]); c.Status != StatusRevoked || c.RevokedAt == nil {
			t.Fatalf("the sweep changed a revoked credential: %+v", c)
		}
		// Nothing left: the next sweep changes nothing.
		if res, err := s.Sweep(ctx, SweepOptions{Holder: "replica-a", Chunk: 1000, Now: now}); err != nil || res.Tokens+res.Credentials != 0 {
			t.Fatalf("second sweep: %+v %v", res, err)
		}
	})
}

// TestSweepBulkChunks: a bulk chunk's retry record goes once the retention
// has passed since its commit, never before.
func TestSweepBulkChunks(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		ctx := context.Background()
		now := t0.Add(30 * 24 * time.Hour)
		key := bytes.Repeat([]byte{7}, 32)
		for i, at := range []time.Time{now.Add(-72 * time.Hour), now.Add(-49 * time.Hour), now.Add(-47 * time.Hour), now} {
			if err := s.tx(ctx, "test_setup", func(q querier) error {
				_, err := q.exec(ctx, `INSERT INTO bulk_chunks (batch_key, chunk, rows_sha256, created_at) VALUES ($1, $2, $3, $4)`,
					key, i, bytes.Repeat([]byte{1}, 32), at.UTC())
				return err
			}); err != nil {
				t.Fatal(err)
			}
		}
		res, err := s.Sweep(ctx, SweepOptions{Holder: "replica-a", Now: now, BulkChunkRetention: 48 * time.Hour})
		if err != nil || res.BulkChunks != 2 {
			t.Fatalf("sweep: %+v %v, want the two chunks older than 48 hours deleted", res, err)
		}
		for i, want := range []bool{false, false, true, true} {
			_, ok, err := s.BulkChunkFingerprint(ctx, key, i)
			if err != nil || ok != want {
				t.Fatalf("chunk %d recorded = %v (%v), want %v", i, ok, err, want)
			}
		}
	})
}

// TestSweepClaimNonces: expired proof-of-control nonces go, live ones stay,
// whoever's they are.
func TestSweepClaimNonces(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		ctx := context.Background()
		now := t0.Add(30 * 24 * time.Hour)
		expiries := []time.Time{now.Add(-time.Hour), now.Add(-time.Second), now, now.Add(time.Second), now.Add(5 * time.Minute)}
		for i, at := range expiries {
			if err := s.tx(ctx, "test_setup", func(q querier) error {
				_, err := q.exec(ctx, `INSERT INTO claim_nonces (nonce_hash, device_id, stakeholder_id, expires_at) VALUES ($1, $2, $3, $4)`,
					bytes.Repeat([]byte{byte(i + 1)}, 32), "dev-1", fmt.Sprintf("claimant-%d", i%2), at.UTC())
				return err
			}); err != nil {
				t.Fatal(err)
			}
		}
		res, err := s.Sweep(ctx, SweepOptions{Holder: "replica-a", Now: now, Chunk: 2})
		if err != nil || res.ClaimNonces != 3 {
			t.Fatalf("sweep: %+v %v, want the three nonces due by now deleted (in chunks of 2)", res, err)
		}
		var left []time.Time
		if err := s.read(ctx, func(q querier) error {
			return queryEach(ctx, q, `SELECT expires_at FROM claim_nonces ORDER BY expires_at`, nil, func(r rows) error {
				var at time.Time
				err := r.Scan(&at)
				left = append(left, at)
				return err
			})
		}); err != nil {
			t.Fatal(err)
		}
		if len(left) != 2 || !left[0].Equal(expiries[3]) || !left[1].Equal(expiries[4]) {
			t.Fatalf("left %v, want the two live nonces", left)
		}
	})
}

// TestSweepLease: two replicas, one lease. Only the holder sweeps; the
// other skips until the lease lapses; a holder that lost the lease stops.
func TestSweepLease(t *testing.T) {
	storetest.Each(t, func(t *testing.T, url string) {
		ctx := context.Background()
		now := t0.Add(48 * time.Hour)
		// Two Stores on one database: two replicas (for SQLite, two
		// processes' worth of connections on one file).
		a, b := openURLForTest(t, url, nil), openURLForTest(t, url, nil)
		insertDue(t, a, 30, now.Add(-time.Second))

		// Replicas racing for a free lease: exactly one wins.
		const racers = 8
		won := make([]bool, racers)
		var wg sync.WaitGroup
		for i := range racers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				st := a
				if i%2 == 1 {
					st = b
				}
				var err error
				if won[i], err = st.TakeLease(ctx, "race", fmt.Sprintf("replica-%d", i), time.Minute, time.Now()); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		winners := 0
		for _, w := range won {
			if w {
				winners++
			}
		}
		if winners != 1 {
			t.Fatalf("%d replicas took one lease", winners)
		}

		// Two sweepers at once: one sweeps everything, the other skips.
		results := make([]SweepResult, 2)
		for i, st := range []*Store{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var err error
				if results[i], err = st.Sweep(ctx, SweepOptions{Holder: fmt.Sprintf("sweeper-%d", i), Chunk: 7, Now: now, LeaseTTL: time.Minute}); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		if results[0].Held == results[1].Held || results[0].Credentials+results[1].Credentials != 30 ||
			results[0].Tokens+results[1].Tokens != 30 {
			t.Fatalf("racing sweepers: %+v", results)
		}
		holder, other := "sweeper-0", "sweeper-1"
		if results[1].Held {
			holder, other = other, holder
		}
		// The holder keeps it on its next run; the other still skips.
		if res, err := b.Sweep(ctx, SweepOptions{Holder: other, Now: now}); err != nil || res.Held {
			t.Fatalf("non-holder while the lease runs: %+v %v", res, err)
		}
		if res, err := a.Sweep(ctx, SweepOptions{Holder: holder, Now: now}); err != nil || !res.Held {
			t.Fatalf("holder renewing: %+v %v", res, err)
		}
		// The holder dies: after its TTL the other takes over.
		if ok, err := b.TakeLease(ctx, SweepLease, other, time.Minute, time.Now().Add(10*time.Minute)); err != nil || !ok {
			t.Fatalf("taking a lapsed lease: %v %v", ok, err)
		}
		// The old holder wakes up mid-sweep: its next chunk aborts.
		insertDue(t, a, 3, now.Add(-time.Second))
		if _, err := a.sweepChunk(ctx, sweepKinds[1], SweepOptions{Holder: holder, Chunk: 10, Now: now, LeaseTTL: time.Minute}); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("chunk by a replica that lost the lease: %v", err)
		}
		if got := countBy(t, a, "credentials", "status"); got[StatusActive] != 3 {
			t.Fatalf("a chunk without the lease changed rows: %v", got)
		}
		// Released on shutdown: free at once for anyone.
		if err := b.ReleaseLease(ctx, SweepLease, other, time.Now()); err != nil {
			t.Fatal(err)
		}
		if ok, err := a.TakeLease(ctx, SweepLease, holder, time.Minute, time.Now()); err != nil || !ok {
			t.Fatalf("taking a released lease: %v %v", ok, err)
		}
	})
}

// TestSweepRacesRevocation: revocations running during a sweep are never
// overwritten (no revoked row becomes 'expired'), and every due row that was
// not revoked ends expired.
func TestSweepRacesRevocation(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		ctx := context.Background()
		now := t0.Add(48 * time.Hour)
		ids := insertDue(t, s, 600, now.Add(-time.Second))
		var wg sync.WaitGroup
		var mu sync.Mutex
		revokedByCall := map[string]bool{}
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < len(ids); i += 8 { // half of them
					got, err := s.Revoke(ctx, Revocation{ID: ids[i], Reason: 1, At: now, Actor: "test", Tenant: "tenant-1"})
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					for _, id := range got {
						revokedByCall[id] = true
					}
					mu.Unlock()
				}
			}()
		}
		var res SweepResult
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if res, err = s.Sweep(ctx, SweepOptions{Holder: "sweeper", Chunk: 25, Now: now}); err != nil {
				t.Error(err)
			}
		}()
		wg.Wait()
		if t.Failed() {
			return
		}
		expired := 0
		for _, id := range ids {
			c := mustCredential(t, s, id)
			switch {
			case revokedByCall[id] && (c.Status != StatusRevoked || c.RevokedAt == nil || c.RevocationReason == nil):
				t.Fatalf("%s: revocation lost: %s", id, c.Status)
			case !revokedByCall[id] && c.Status != StatusExpired:
				t.Fatalf("%s: neither revoked nor expired: %s", id, c.Status)
			case c.Status == StatusExpired:
				expired++
			}
		}
		if expired != res.Credentials || expired+len(revokedByCall) != len(ids) {
			t.Fatalf("sweep reported %d, %d expired, %d revoked, of %d", res.Credentials, expired, len(revokedByCall), len(ids))
		}
		t.Logf("%d revoked, %d expired by the sweep", len(revokedByCall), expired)
	})
}

// TestSweepUsesPartialIndexes: the sweep's inner SELECTs walk the partial
// indexes of migration 3, not the tables (EXPLAIN on both engines; on
// PostgreSQL sequential scans are disabled so the plan shows what it can
// use, not what a tiny table makes cheapest).
func TestSweepUsesPartialIndexes(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		for _, tc := range []struct{ kind, index string }{
			{sweepKinds[0].sql, "enrolments_open_expiry"},
			{sweepKinds[1].sql, "credentials_active_expiry"},
		} {
			if plan := explain(t, s, tc.kind, t0, 10); !strings.Contains(plan, tc.index) {
				t.Errorf("the sweep does not use %s:\n%s", tc.index, plan)
			}
		}
	})
}

// explain returns the engine's plan for query (sequential scans made
// unattractive on PostgreSQL, whose planner prefers them on tiny tables).
func explain(t *testing.T, s *Store, query string, args ...any) string {
	t.Helper()
	var plan []string
	err := s.tx(context.Background(), "test_explain", func(q querier) error {
		ctx := context.Background()
		prefix := "EXPLAIN QUERY PLAN "
		if s.Backend() != "sqlite" {
			prefix = "EXPLAIN "
			if _, err := q.exec(ctx, `SET LOCAL enable_seqscan = off`); err != nil {
				return err
			}
		}
		return queryEach(ctx, q, prefix+query, args, func(r rows) error {
			cols := make([]any, 4)
			if s.Backend() != "sqlite" {
				cols = cols[:1]
			}
			for i := range cols {
				cols[i] = new(any)
			}
			if err := r.Scan(cols...); err != nil {
				return err
			}
			plan = append(plan, fmt.Sprint(*cols[len(cols)-1].(*any)))
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(plan, "\n")
}

// TestAuditOfOneSubjectUsesIndex: a device page reads its audit trail;
// that must not scan the tenant's whole trail.
func TestAuditOfOneSubjectUsesIndex(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		if plan := explain(t, s, auditQuery(2), "dev-1", "cred-1"); !strings.Contains(plan, "audit_events_subject") {
			t.Errorf("Audit does not use audit_events_subject:\n%s", plan)
		}
	})
}

// TestCheckRenewalAfterSuccessor: a renewal of a certificate that was
// already renewed is a replay only for the same key and a successor still
// current; otherwise the refusal names what the client must do: renew with
// the successor (superseded), or enrol again when the successor itself was
// revoked (a release) or has lapsed.
func TestCheckRenewalAfterSuccessor(t *testing.T) {
	now := t0.Add(time.Hour)
	key, other := []byte("key-1"), []byte("key-2")
	old := Credential{Type: TypeX509, Status: StatusRevoked, RevocationReason: ptr(crlreason.Superseded),
		NotBefore: t0.Add(-24 * time.Hour), NotAfter: t0.Add(24 * time.Hour)}
	succ := func(status string, reason *int, notAfter time.Time) *Credential {
		return &Credential{Type: TypeX509, Status: status, RevocationReason: reason, PublicKeySHA256: key,
			NotBefore: t0, NotAfter: notAfter}
	}
	for _, tt := range []struct {
		name      string
		successor *Credential
		key       []byte
		replay    bool
		err       error
	}{
		{"retry, same key", succ(StatusActive, nil, t0.Add(48*time.Hour)), key, true, nil},
		{"another key", succ(StatusActive, nil, t0.Add(48*time.Hour)), other, false, ErrCertSuperseded},
		{"successor renewed in turn", succ(StatusRevoked, ptr(crlreason.Superseded), t0.Add(48*time.Hour)), key, false, ErrCertSuperseded},
		{"successor revoked by a release", succ(StatusRevoked, ptr(crlreason.AffiliationChanged), t0.Add(48*time.Hour)), key, false, ErrCertRevoked},
		{"successor expired (swept)", succ(StatusExpired, nil, t0), key, false, ErrCertExpired},
		{"successor lapsed, not yet swept", succ(StatusActive, nil, t0), key, false, ErrCertExpired},
	} {
		replay, err := CheckRenewal(old, tt.successor, tt.key, now, 0, 0)
		if replay != tt.replay || !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
			t.Errorf("%s: %v, %v; want %v, %v", tt.name, replay, err, tt.replay, tt.err)
		}
	}
}
