package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/credfactory/credfactory/crlreason"
)

// pskCredential is a shared-key credential of e's device with a usage.
func pskCredential(e Enrolment, suid int) Credential {
	kid := fmt.Sprintf("%x@mef.sp.example", randomBytes(8))
	return Credential{ID: fmt.Sprintf("%d-%s", suid-10, kid), AssignedID: e.AssignedID, DeviceID: e.DeviceID, Tenant: e.Tenant,
		Type: TypePSK, SUID: suid, KeyID: &kid, KeID: &kid, KDFContext: []byte(`{"v":1}`), NotBefore: t0, NotAfter: t0.Add(time.Hour),
		Status: StatusActive, Source: SourceRegister, CreatedAt: t0}
}

// enrolledDevice redeems a fresh token with a certificate (SUID 42) and
// registers shared keys with the given usages; it returns the enrolment and
// the credentials, certificate first.
func enrolledDevice(t *testing.T, s *Store, suids ...int) (Enrolment, []Credential) {
	t.Helper()
	ctx := context.Background()
	e := newEnrolment(t, s, nil)
	got, err := s.Redeem(ctx, redemption(e, certCredential()))
	if err != nil {
		t.Fatal(err)
	}
	creds := []Credential{got.Credential}
	for _, suid := range suids {
		c := pskCredential(e, suid)
		if err := s.RegisterCredential(ctx, c); err != nil {
			t.Fatal(err)
		}
		creds = append(creds, c)
	}
	return e, creds
}

func statuses(t *testing.T, s *Store, creds []Credential) []string {
	t.Helper()
	out := make([]string, len(creds))
	for i, c := range creds {
		got, err := s.Credential(context.Background(), ByID, c.ID)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = got.Status
		if got.Status == StatusRevoked && (got.RevokedAt == nil || got.RevocationReason == nil) {
			t.Fatalf("%s revoked without time or reason: %+v", c.ID, got)
		}
	}
	return out
}

func TestRevokeScopes(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		ctx := context.Background()
		const a, r = StatusActive, StatusRevoked
		// Each case gets a device of its own: credentials 42 (cert), 22, 24, 10.
		cases := []struct {
			name  string
			scope func(e Enrolment, cs []Credential) Revocation
			want  []string // statuses after, in creds order
			err   error
		}{
			{"one credential", func(e Enrolment, cs []Credential) Revocation { return Revocation{ID: cs[1].ID} }, []string{a, r, a, a}, nil},
			{"one credential of its device", func(e Enrolment, cs []Credential) Revocation {
				return Revocation{ID: cs[0].ID, DeviceID: e.DeviceID}
			}, []string{r, a, a, a}, nil},
			{"one credential of another device", func(e Enrolment, cs []Credential) Revocation {
				return Revocation{ID: cs[0].ID, DeviceID: "someone-else"}
			}, []string{a, a, a, a}, ErrNotFound},
			{"unknown credential", func(e Enrolment, cs []Credential) Revocation { return Revocation{ID: "33-unknown"} }, []string{a, a, a, a}, ErrNotFound},
			{"a device's", func(e Enrolment, cs []Credential) Revocation { return Revocation{DeviceID: e.DeviceID} }, []string{r, r, r, r}, nil},
			{"an assigned ID's", func(e Enrolment, cs []Credential) Revocation { return Revocation{AssignedID: e.AssignedID} }, []string{r, r, r, r}, nil},
			{"a device's SUID set", func(e Enrolment, cs []Credential) Revocation {
				return Revocation{DeviceID: e.DeviceID, SUIDs: []int{42, 24}}
			}, []string{r, a, r, a}, nil},
			{"reason 7 is unassigned", func(e Enrolment, cs []Credential) Revocation {
				return Revocation{DeviceID: e.DeviceID, Reason: 7}
			}, []string{a, a, a, a}, ErrInvalid},
			{"reason 8 only un-revokes", func(e Enrolment, cs []Credential) Revocation {
				return Revocation{DeviceID: e.DeviceID, Reason: 8}
			}, []string{a, a, a, a}, ErrInvalid},
			{"reason 11 does not exist", func(e Enrolment, cs []Credential) Revocation {
				return Revocation{DeviceID: e.DeviceID, Reason: 11}
			}, []string{a, a, a, a}, ErrInvalid},
			{"no scope", func(e Enrolment, cs []Credential) Revocation { return Revocation{} }, []string{a, a, a, a}, errors.New("any")},
			{"two scopes", func(e Enrolment, cs []Credential) Revocation {
				return Revocation{DeviceID: e.DeviceID, AssignedID: e.AssignedID}
			}, []string{a, a, a, a}, errors.New("any")},
			{"SUIDs on one credential", func(e Enrolment, cs []Credential) Revocation {
				return Revocation{ID: cs[1].ID, SUIDs: []int{22}}
			}, []string{a, a, a, a}, errors.New("any")},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				e, creds := enrolledDevice(t, s, 22, 24, 10)
				rev := c.scope(e, creds)
				rev.At, rev.Actor = t0.Add(time.Hour), "admin"
				if rev.Reason == 0 {
					rev.Reason = crlreason.KeyCompromise
				}
				ids, err := s.Revoke(ctx, rev)
				switch {
				case c.err == nil && err != nil, c.err != nil && err == nil:
					t.Fatalf("Revoke: %v, want %v", err, c.err)
				case c.err != nil && c.err.Error() != "any" && !errors.Is(err, c.err):
					t.Fatalf("Revoke: %v, want %v", err, c.err)
				}
				got := statuses(t, s, creds)
				if !slices.Equal(got, c.want) {
					t.Fatalf("statuses %v, want %v", got, c.want)
				}
				var want []string
				for i, st := range c.want {
					if st == r {
						want = append(want, creds[i].ID)
					}
				}
				slices.Sort(want)
				if !slices.Equal(ids, want) {
					t.Fatalf("revoked %v, want %v", ids, want)
				}
				for _, id := range want {
					events, err := s.Audit(ctx, e.Tenant, id)
					if err != nil || len(events) != 1 || events[0].Action != "credential.revoke" || events[0].Actor != "admin" ||
						events[0].Detail["reason"] != float64(crlreason.KeyCompromise) {
						t.Fatalf("audit of %s: %+v %v", id, events, err)
					}
				}
				// Idempotent: the same revocation again changes nothing,
				// not even the time or reason.
				if c.err == nil {
					again := rev
					again.Reason, again.At = crlreason.Superseded, t0.Add(2*time.Hour)
					if ids, err := s.Revoke(ctx, again); err != nil || len(ids) != 0 {
						t.Fatalf("second revocation: %v %v", ids, err)
					}
					for _, id := range want {
						c, _ := s.Credential(ctx, ByID, id)
						if *c.RevocationReason != crlreason.KeyCompromise || !c.RevokedAt.Equal(t0.Add(time.Hour)) {
							t.Fatalf("second revocation changed %s: %+v", id, c)
						}
					}
				}
			})
		}
	})
}

func TestRelease(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		ctx := context.Background()
		e, creds := enrolledDevice(t, s, 22, 24, 21, 10)
		// A re-request leaves an open token on the enrolled device.
		open := newEnrolment(t, s, func(n *Enrolment) { n.DeviceID, n.AssignedID = e.DeviceID, e.AssignedID })
		at := t0.Add(time.Hour)

		if _, err := s.Release(ctx, Release{DeviceID: e.DeviceID, Tenant: "tenant-2", Reason: crlreason.AffiliationChanged, Actor: "mallory", At: at}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("release by another tenant: %v, want ErrNotFound", err)
		}
		if _, err := s.Release(ctx, Release{DeviceID: "no-such-device", Reason: crlreason.AffiliationChanged, Actor: "admin", At: at}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("release of an unknown device: %v, want ErrNotFound", err)
		}
		if _, err := s.Release(ctx, Release{DeviceID: e.DeviceID, Reason: 7, Actor: "admin", At: at}); !errors.Is(err, ErrInvalid) {
			t.Fatalf("release with reason 7: %v, want ErrInvalid", err)
		}
		if got := statuses(t, s, creds); slices.Contains(got, StatusRevoked) {
			t.Fatalf("a refused release revoked something: %v", got)
		}

		out, err := s.Release(ctx, Release{DeviceID: e.DeviceID, Tenant: e.Tenant, Reason: crlreason.AffiliationChanged, Note: "sold", Actor: "alice", At: at})
		if err != nil {
			t.Fatal(err)
		}
		// Everything but the pre-provisioned key with the MEF (SUID 10).
		want := []string{creds[0].ID, creds[1].ID, creds[2].ID, creds[3].ID}
		slices.Sort(want)
		if !slices.Equal(out.Revoked, want) || out.Cancelled != 1 || out.From != e.Tenant || out.To != "maker-1" ||
			out.AssignedID == nil || *out.AssignedID != e.AssignedID {
			t.Fatalf("released %+v, want revoked %v, one token cancelled, tenant-1 -> maker-1", out, want)
		}
		if got := statuses(t, s, creds); !slices.Equal(got, []string{StatusRevoked, StatusRevoked, StatusRevoked, StatusRevoked, StatusActive}) {
			t.Fatalf("statuses after release: %v", got)
		}
		d, err := s.Device(ctx, e.DeviceID)
		if err != nil {
			t.Fatal(err)
		}
		if d.State != DevicePreEnrolled || d.OwnerID != nil || d.Tenant != "maker-1" || d.AssignedID != nil {
			t.Fatalf("device after release: %+v", d)
		}
		if ds, err := s.Devices(ctx, e.Tenant, DeviceFilter{}); err != nil || len(ds) != 0 {
			t.Fatalf("the old owner still lists %d devices: %v", len(ds), err)
		}
		for _, tenant := range []string{e.Tenant, "maker-1"} {
			events, err := s.Audit(ctx, tenant, e.DeviceID)
			if err != nil {
				t.Fatal(err)
			}
			last := events[len(events)-1]
			if last.Action != "device.release" || last.Actor != "alice" || last.Detail["note"] != "sold" || last.Detail["revoked"] != float64(4) {
				t.Fatalf("%s's audit: %+v", tenant, events)
			}
		}
		// The open token is dead, and so is a retry of the redemption that
		// bought the (now revoked) certificate.
		if _, err := s.Redeem(ctx, redemption(open, certCredential())); !errors.Is(err, ErrTokenCancelled) {
			t.Fatalf("redeeming the open token after release: %v", err)
		}
		enrolments, _ := s.Enrolments(ctx, e.DeviceID)
		var first Enrolment
		for _, en := range enrolments {
			if en.State == EnrolmentRedeemed {
				first = en
			}
		}
		replay := redemption(e, certCredential())
		replay.RequestID = *first.RequestID
		if _, err := s.Redeem(ctx, replay); !errors.Is(err, ErrTokenCancelled) {
			t.Fatalf("replaying the redemption of a revoked credential: %v", err)
		}
		// Releasing again revokes nothing more: idempotent.
		if again, err := s.Release(ctx, Release{DeviceID: e.DeviceID, Reason: crlreason.AffiliationChanged, Actor: "admin", At: at}); err != nil || len(again.Revoked) != 0 || again.Cancelled != 0 {
			t.Fatalf("second release: %+v %v", again, err)
		}

		// A new stakeholder claims it with a fresh assigned ID; a second
		// claimant comes too late.
		claim := newEnrolment(t, s, func(n *Enrolment) { n.DeviceID, n.Tenant, n.AssignedID = e.DeviceID, "tenant-2", "Snew" })
		d, _ = s.Device(ctx, e.DeviceID)
		if d.Tenant != "tenant-2" || d.OwnerID == nil || *d.OwnerID != "tenant-2" || d.State != DeviceTokenIssued || *d.AssignedID != "Snew" {
			t.Fatalf("device after the claim: %+v", d)
		}
		late := claim
		late.TokenHash, late.Tenant = randomBytes(32), "tenant-3"
		if err := s.CreateEnrolment(ctx, late); !errors.Is(err, ErrNotFound) {
			t.Fatalf("a second claimant: %v, want ErrNotFound", err)
		}
		if _, err := s.Redeem(ctx, redemption(claim, certCredential())); err != nil {
			t.Fatalf("the new owner's redemption: %v", err)
		}
	})
}

// TestReleaseRacesRedemption is the fault: a release racing the
// redemption of the device's open token, round after round, through both a
// transaction of its own and group commit. Whichever wins, the released
// device must end with no active credential: either the redemption was
// refused (token cancelled) or the credential it recorded is revoked.
func TestReleaseRacesRedemption(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, obs *countingObserver) {
		ctx := context.Background()
		b := s.NewBatcher(BatchOptions{})
		defer b.Close()
		const rounds = 60
		outcomes := map[string]int{}
		for round := range rounds {
			e := newEnrolment(t, s, nil)
			c := certCredential()
			var (
				wg       sync.WaitGroup
				start    = make(chan struct{})
				redeemed Redeemed
				redErr   error
				rel      Released
				relErr   error
			)
			wg.Add(2)
			go func() {
				defer wg.Done()
				<-start
				if round%2 == 0 {
					redeemed, redErr = s.Redeem(ctx, redemption(e, c))
				} else {
					redeemed, redErr = b.Redeem(ctx, redemption(e, c))
				}
			}()
			go func() {
				defer wg.Done()
				<-start
				rel, relErr = s.Release(ctx, Release{DeviceID: e.DeviceID, Tenant: e.Tenant, Reason: crlreason.AffiliationChanged, Actor: "alice", At: t0.Add(time.Hour)})
			}()
			close(start)
			wg.Wait()
			if relErr != nil {
				t.Fatalf("round %d: release: %v", round, relErr)
			}
			switch {
			case redErr == nil:
				got, err := s.Credential(ctx, ByID, redeemed.Credential.ID)
				if err != nil || got.Status != StatusRevoked || !slices.Contains(rel.Revoked, got.ID) {
					t.Fatalf("round %d: the redemption won but its credential is %q after the release (revoked %v): %v", round, got.Status, rel.Revoked, err)
				}
				outcomes["redemption first"]++
			case errors.Is(redErr, ErrTokenCancelled):
				if _, err := s.Credential(ctx, ByID, c.ID); !errors.Is(err, ErrNotFound) {
					t.Fatalf("round %d: a refused redemption recorded its credential: %v", round, err)
				}
				outcomes["release first"]++
			default:
				t.Fatalf("round %d: redemption: %v", round, redErr)
			}
			creds, err := s.listCredentials(ctx, `WHERE device_id = $1 AND status = 'active'`, e.DeviceID)
			if err != nil || len(creds) != 0 {
				t.Fatalf("round %d: %d active credentials on the released device: %v", round, len(creds), err)
			}
			d, err := s.Device(ctx, e.DeviceID)
			if err != nil || d.State != DevicePreEnrolled || d.OwnerID != nil || d.AssignedID != nil {
				t.Fatalf("round %d: device after the race: %+v %v", round, d, err)
			}
		}
		_, retries, _ := obs.snapshot()
		t.Logf("%d rounds: %v; serialization retries %v", rounds, outcomes, retries)
	})
}
