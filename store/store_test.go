package store

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credfactory/credfactory/store/storetest"
)

func TestMigrateIsIdempotent(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		ctx := context.Background()
		v, err := s.Version(ctx)
		if err != nil || v != SchemaVersion() {
			t.Fatalf("version %d, %v; want %d", v, err, SchemaVersion())
		}
		applied, err := s.Migrate(ctx)
		if err != nil || len(applied) != 0 {
			t.Fatalf("second migrate applied %v, %v", applied, err)
		}
	})
}

func TestRedeemRecordsCredential(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		ctx := context.Background()
		e := newEnrolment(t, s, nil)
		c := certCredential()
		c.TargetIDs = []string{"in-cse.sp.example"}
		got, err := s.Redeem(ctx, redemption(e, c))
		if err != nil {
			t.Fatal(err)
		}
		if got.Replayed || got.Credential.AssignedID != e.AssignedID || got.Credential.Status != StatusActive {
			t.Fatalf("redeemed: %+v", got)
		}
		after, err := s.Enrolment(ctx, e.TokenHash)
		if err != nil || after.State != EnrolmentRedeemed || after.CredentialID == nil || *after.CredentialID != c.ID {
			t.Fatalf("enrolment after redemption: %+v, %v", after, err)
		}
		for by, v := range map[CredentialBy]any{ByID: c.ID, BySerial: *c.Serial, ByCertSHA256: c.CertSHA256} {
			found, err := s.Credential(ctx, by, v)
			if err != nil || found.ID != c.ID || string(found.CertDER) != string(c.CertDER) ||
				!found.NotAfter.Equal(c.NotAfter) || len(found.TargetIDs) != 1 {
				t.Fatalf("by %s: %+v, %v", by, found, err)
			}
		}
		list, err := s.Credentials(ctx, e.AssignedID)
		if err != nil || len(list) != 1 {
			t.Fatalf("list: %v %v", list, err)
		}
		if _, err := s.Credential(ctx, ByID, "33-nope"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unknown ID: %v", err)
		}
		events, err := s.Audit(ctx, e.Tenant, e.DeviceID)
		if err != nil || len(events) != 1 || events[0].Action != "device.enrolled" || events[0].Detail["credentialId"] != c.ID {
			t.Fatalf("audit of the enrolment: %+v %v", events, err)
		}
	})
}

func TestRedeemRefusesAndWritesNothing(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		ctx := context.Background()
		devCert := sha256.Sum256([]byte("device cert"))
		obf := "obf-1"
		tests := []struct {
			name   string
			enrol  func(*Enrolment)
			redeem func(*Redemption)
			want   error
		}{
			{"unknown token", nil, func(r *Redemption) { h := sha256.Sum256([]byte("x")); r.TokenHash = h[:] }, ErrTokenUnknown},
			{"expired", func(e *Enrolment) { e.ExpiresAt = t0 }, nil, ErrTokenExpired},
			{"other assigned ID", nil, func(r *Redemption) { r.AssignedID = "Sother" }, ErrTokenMismatch},
			{"trusted token on the RSPF path", func(e *Enrolment) { e.Mode, e.OBFID = ModeTrusted, &obf }, func(r *Redemption) { r.Mode = ModeUntrusted }, ErrTokenMismatch},
			{"other OBF", func(e *Enrolment) { e.Mode, e.OBFID = ModeTrusted, &obf }, func(r *Redemption) { r.Mode, r.OBFID = ModeTrusted, "obf-2" }, ErrTokenMismatch},
			{"no device certificate", func(e *Enrolment) { e.DeviceCertSHA256 = devCert[:] }, nil, ErrTokenMismatch},
			{"other device certificate", func(e *Enrolment) { e.DeviceCertSHA256 = devCert[:] }, func(r *Redemption) { r.DeviceCertSHA256 = make([]byte, 32) }, ErrTokenMismatch},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				e := newEnrolment(t, s, tc.enrol)
				c := certCredential()
				r := redemption(e, c)
				if tc.redeem != nil {
					tc.redeem(&r)
				}
				if _, err := s.Redeem(ctx, r); !errors.Is(err, tc.want) {
					t.Fatalf("got %v, want %v", err, tc.want)
				}
				if _, err := s.Credential(ctx, ByID, c.ID); !errors.Is(err, ErrNotFound) {
					t.Fatalf("a refused redemption recorded its credential: %v", err)
				}
				if after, err := s.Enrolment(ctx, e.TokenHash); err != nil || after.State != EnrolmentIssued {
					t.Fatalf("a refused redemption changed the token: %+v %v", after, err)
				}
			})
		}
		t.Run("cancelled by a new token for the device", func(t *testing.T) {
			e := newEnrolment(t, s, nil)
			newEnrolment(t, s, func(n *Enrolment) { n.DeviceID, n.AssignedID = e.DeviceID, e.AssignedID })
			if _, err := s.Redeem(ctx, redemption(e, certCredential())); !errors.Is(err, ErrTokenCancelled) {
				t.Fatalf("got %v, want ErrTokenCancelled", err)
			}
		})
		t.Run("bound device certificate presented", func(t *testing.T) {
			e := newEnrolment(t, s, func(e *Enrolment) { e.DeviceCertSHA256 = devCert[:] })
			r := redemption(e, certCredential())
			r.DeviceCertSHA256 = devCert[:]
			if _, err := s.Redeem(ctx, r); err != nil {
				t.Fatal(err)
			}
		})
	})
}

func TestRedeemTwice(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		ctx := context.Background()
		e := newEnrolment(t, s, nil)
		c := certCredential()
		r := redemption(e, c)
		first, err := s.Redeem(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		// The same request again (a client retrying after a lost answer).
		again, err := s.Redeem(ctx, r)
		if err != nil || !again.Replayed || again.Credential.ID != first.Credential.ID {
			t.Fatalf("retry of the same request: %+v, %v", again, err)
		}
		// A new request with the same key: still the same enrolment, replayed.
		sameKey := r
		sameKey.RequestID = "another-request"
		sameKey.Credential = certCredential()
		sameKey.Credential.PublicKeySHA256 = c.PublicKeySHA256
		if got, err := s.Redeem(ctx, sameKey); err != nil || !got.Replayed || got.Credential.ID != c.ID {
			t.Fatalf("same key: %+v, %v", got, err)
		}
		// Anyone else: refused, and their credential is not recorded.
		other := redemption(e, certCredential())
		if _, err := s.Redeem(ctx, other); !errors.Is(err, ErrTokenRedeemed) {
			t.Fatalf("second redemption: %v, want ErrTokenRedeemed", err)
		}
		if _, err := s.Credential(ctx, ByID, other.Credential.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("refused credential recorded: %v", err)
		}
	})
}

// TestConcurrentRedeemersOneWinner: of 32 redeemers of one token, exactly one
// gets a credential, with and without group commit.
func TestConcurrentRedeemersOneWinner(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		for _, batched := range []bool{false, true} {
			t.Run(fmt.Sprintf("batched=%v", batched), func(t *testing.T) {
				ctx := context.Background()
				e := newEnrolment(t, s, nil)
				redeem := s.Redeem
				if batched {
					b := s.NewBatcher(BatchOptions{})
					defer b.Close()
					redeem = b.Redeem
				}
				var wins, refused atomic.Int64
				var wg sync.WaitGroup
				start := make(chan struct{})
				for i := 0; i < 32; i++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						<-start
						_, err := redeem(ctx, redemption(e, certCredential()))
						switch {
						case err == nil:
							wins.Add(1)
						case errors.Is(err, ErrTokenRedeemed):
							refused.Add(1)
						default:
							t.Errorf("unexpected error: %v", err)
						}
					}()
				}
				close(start)
				wg.Wait()
				if wins.Load() != 1 || refused.Load() != 31 {
					t.Fatalf("%d won, %d refused; want 1 and 31", wins.Load(), refused.Load())
				}
				list, err := s.Credentials(ctx, e.AssignedID)
				if err != nil || len(list) != 1 {
					t.Fatalf("%d credentials recorded for one token: %v", len(list), err)
				}
			})
		}
	})
}

// TestBatchIsolatesBadItems: refusals and a database-level failure (a
// duplicate Credential-ID) in one batch leave the good items committed.
func TestBatchIsolatesBadItems(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, obs *countingObserver) {
		ctx := context.Background()
		// A long window so every item lands in one batch.
		b := s.NewBatcher(BatchOptions{Window: 300 * time.Millisecond, MaxItems: 64, Workers: 1})
		defer b.Close()
		taken := certCredential()
		if _, err := s.Redeem(ctx, redemption(newEnrolment(t, s, nil), taken)); err != nil {
			t.Fatal(err)
		}
		type item struct {
			r    Redemption
			want error
		}
		var items []item
		for i := 0; i < 10; i++ {
			items = append(items, item{redemption(newEnrolment(t, s, nil), certCredential()), nil})
		}
		items = append(items,
			item{redemption(newEnrolment(t, s, func(e *Enrolment) { e.ExpiresAt = t0 }), certCredential()), ErrTokenExpired},
			item{redemption(newEnrolment(t, s, nil), taken), ErrConflict},
		)
		var wg sync.WaitGroup
		errs := make([]error, len(items))
		for i, it := range items {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = b.Redeem(ctx, it.r)
			}()
		}
		wg.Wait()
		for i, it := range items {
			if (it.want == nil) != (errs[i] == nil) || it.want != nil && !errors.Is(errs[i], it.want) {
				t.Errorf("item %d: got %v, want %v", i, errs[i], it.want)
			}
		}
		for _, it := range items[:10] {
			if _, err := s.Credential(ctx, ByID, it.r.Credential.ID); err != nil {
				t.Errorf("good item not committed: %v", err)
			}
		}
		if _, _, batches := obs.snapshot(); len(batches) == 0 || batches[0] < 2 {
			t.Fatalf("no shared batch formed: %v", batches)
		}
	})
}

func TestRevoke(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		ctx := context.Background()
		e := newEnrolment(t, s, nil)
		dev := certCredential()
		if _, err := s.Redeem(ctx, redemption(e, dev)); err != nil {
			t.Fatal(err)
		}
		kid := "0a0b@mef.sp.example"
		psk := Credential{ID: "12-" + kid, AssignedID: e.AssignedID, DeviceID: e.DeviceID, Tenant: e.Tenant, Type: TypePSK,
			SUID: 22, KeyID: &kid, KeID: &kid, KDFContext: []byte(`{"v":1}`), NotBefore: t0, NotAfter: t0.Add(time.Hour),
			Status: StatusActive, Source: SourceRegister, CreatedAt: t0}
		if err := s.RegisterCredential(ctx, psk); err != nil {
			t.Fatal(err)
		}
		if err := s.RegisterCredential(ctx, psk); !errors.Is(err, ErrConflict) {
			t.Fatalf("registering twice: %v, want ErrConflict", err)
		}
		// Only SUID 22 (SAEF, RSPF-provisioned).
		ids, err := s.Revoke(ctx, Revocation{AssignedID: e.AssignedID, SUIDs: []int{22}, Reason: 5, At: t0, Actor: "admin", Tenant: e.Tenant})
		if err != nil || len(ids) != 1 || ids[0] != psk.ID {
			t.Fatalf("revoke by SUID: %v %v", ids, err)
		}
		got, _ := s.Credential(ctx, ByKeyID, kid)
		if got.Status != StatusRevoked || got.RevokedAt == nil || got.RevocationReason == nil || *got.RevocationReason != 5 {
			t.Fatalf("after revocation: %+v", got)
		}
		if still, _ := s.Credential(ctx, ByID, dev.ID); still.Status != StatusActive {
			t.Fatal("revocation by SUID touched another usage")
		}
		if ids, err := s.Revoke(ctx, Revocation{ID: psk.ID, Reason: 1, At: t0}); err != nil || len(ids) != 0 {
			t.Fatalf("revoking twice: %v %v", ids, err)
		}
		if _, err := s.Revoke(ctx, Revocation{ID: "33-unknown", Reason: 1, At: t0}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unknown credential: %v", err)
		}
		if ids, err := s.Revoke(ctx, Revocation{AssignedID: e.AssignedID, Reason: 4, At: t0, Actor: "admin", Tenant: e.Tenant}); err != nil || len(ids) != 1 {
			t.Fatalf("revoke all: %v %v", ids, err)
		}
		events, err := s.Audit(ctx, e.Tenant, dev.ID)
		if err != nil || len(events) != 1 || events[0].Actor != "admin" || events[0].Action != "credential.revoke" {
			t.Fatalf("audit: %+v %v", events, err)
		}
	})
}

// TestHandOver: only the manufacturer's own pre-enrolled devices move, each
// once, each with its audit event, on both backends (PostgreSQL pipelines
// the statements).
func TestHandOver(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		ctx := context.Background()
		if _, err := s.UpsertDevices(ctx, "m1", []Device{{ID: "ho-1"}, {ID: "ho-2"}}, t0); err != nil {
			t.Fatal(err)
		}
		if _, err := s.UpsertDevices(ctx, "m2", []Device{{ID: "ho-other"}}, t0); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateStakeholder(ctx, Stakeholder{ID: "sub-1", Name: "sub", Role: RoleSubscriber, CreatedAt: t0}); err != nil {
			t.Fatal(err)
		}
		moved, err := s.HandOver(ctx, "m1", "sub-1", []string{"ho-1", "ho-other", "ho-2", "ho-1", "ho-unknown"}, "m1-user", t0)
		if err != nil {
			t.Fatal(err)
		}
		if moved != 2 {
			t.Fatalf("moved %d devices, want 2 (ho-1 and ho-2, once each)", moved)
		}
		for id, want := range map[string]int{"ho-1": 1, "ho-2": 1, "ho-other": 0} {
			events, err := s.Audit(ctx, "sub-1", id)
			if err != nil {
				t.Fatal(err)
			}
			if len(events) != want || want == 1 && (events[0].Action != "device.hand_over" || events[0].Detail["from"] != "m1") {
				t.Fatalf("%s: audit %+v, want %d hand-over event(s) from m1", id, events, want)
			}
		}
		if moved, err := s.HandOver(ctx, "m1", "sub-1", []string{"ho-1"}, "m1-user", t0); err != nil || moved != 0 {
			t.Fatalf("second hand-over of ho-1: moved %d, %v; want 0, nil", moved, err)
		}
	})
}

// TestConcurrentMigrate: replicas starting together all run Migrate. On
// PostgreSQL two CREATE ... IF NOT EXISTS of the same object race in the
// catalog (the loser gets a unique violation on pg_class or pg_type); every
// replica must still come up, on a fresh database and on one at version 1.
func TestConcurrentMigrate(t *testing.T) {
	storetest.Each(t, func(t *testing.T, url string) {
		ctx := context.Background()
		for round := 0; round < 2; round++ {
			stores := make([]*Store, 4)
			for i := range stores {
				s, err := Open(ctx, url, Options{MaxConns: 4})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(s.Close)
				stores[i] = s
			}
			if round == 1 {
				// Back to version 1, as a database the previous release left.
				if err := stores[0].tx(ctx, "test", func(q querier) error {
					_, err := q.exec(ctx, `DELETE FROM schema_migrations WHERE version > 1`)
					return err
				}); err != nil {
					t.Fatal(err)
				}
			}
			var wg sync.WaitGroup
			errs := make([]error, len(stores))
			for i, s := range stores {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, errs[i] = s.Migrate(ctx)
				}()
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Fatalf("round %d: replica %d: %v", round, i, err)
				}
			}
			if v, err := stores[0].Version(ctx); err != nil || v != SchemaVersion() {
				t.Fatalf("round %d: version %d, %v", round, v, err)
			}
		}
	})
}
