package hsm_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credfactory/credfactory/apierr"
	"github.com/credfactory/credfactory/hsm"
	"github.com/credfactory/credfactory/hsm/softhsm/softhsmtest"
	"github.com/miekg/pkcs11"
)

// TestOneBrokenSessionAmongLiveOnes: a single session breaks while another
// is busy (a network HSM's idle timeout does this). Key lookups after it
// must not trip over the busy session's copies of the key.
func TestOneBrokenSessionAmongLiveOnes(t *testing.T) {
	m := open(t, 2, nil)
	s, err := m.Signer(context.Background(), p256URI)
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("x"))
	if _, err := s.Sign(nil, d[:], crypto.SHA256); err != nil {
		t.Fatal(err)
	}
	release, err := m.HoldSession(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := m.DoFailOnceThen(context.Background(), pkcs11.CKR_SESSION_HANDLE_INVALID, release); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		if _, err := s.Sign(nil, d[:], crypto.SHA256); err != nil {
			t.Fatalf("signature %d after one broken session: %v", i, err)
		}
	}
	// A second handle on the same key (as two components would hold) works too.
	k1, _ := m.HMACKey(hmacURI)
	k2, _ := m.HMACKey(hmacURI)
	for _, k := range []interface {
		Sum(context.Context, []byte) ([]byte, error)
	}{k1, k2} {
		if _, err := k.Sum(context.Background(), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
}

// TestTokenGoneReinitialises: CKR_DEVICE_REMOVED and CKR_TOKEN_NOT_PRESENT
// make the pool finalise and re-initialise the library and find the token
// again, and the operation then succeeds.
func TestTokenGoneReinitialises(t *testing.T) {
	for _, code := range []uint{pkcs11.CKR_DEVICE_REMOVED, pkcs11.CKR_TOKEN_NOT_PRESENT} {
		t.Run(fmt.Sprintf("%#x", code), func(t *testing.T) {
			rec := &recorder{}
			m := open(t, 2, rec)
			if err := m.DoFailOnceThen(context.Background(), code, func() {}); err != nil {
				t.Fatalf("operation after re-initialisation: %v", err)
			}
			rec.mu.Lock()
			reinits := rec.recoveries["reinit"]
			rec.mu.Unlock()
			if reinits != 1 {
				t.Fatalf("%d re-initialisations, want 1 (%v)", reinits, rec.recoveries)
			}
			s, err := m.Signer(context.Background(), p256URI)
			if err != nil {
				t.Fatal(err)
			}
			d := sha256.Sum256([]byte("x"))
			if _, err := s.Sign(nil, d[:], crypto.SHA256); err != nil {
				t.Fatalf("sign after re-initialisation: %v", err)
			}
		})
	}
}

// TestReinitGapAfterSuccess: a token that looks lost again right after a
// successful re-initialisation (a network HSM whose C_GetTokenInfo times
// out under load) does not get another C_Finalize/C_Initialize at once:
// callers within the gap get ErrUnavailable, a 503 with Retry-After.
func TestReinitGapAfterSuccess(t *testing.T) {
	for _, tc := range []struct {
		name        string
		gap         time.Duration // 0: the default
		wantReinits int
		secondErr   error
	}{
		{"within the default gap", 0, 1, hsm.ErrUnavailable},
		{"gap off", -1, 2, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			m := open(t, 2, rec)
			if tc.gap != 0 {
				m.SetReinitGap(max(tc.gap, 0))
			}
			if err := m.DoFailOnceThen(context.Background(), pkcs11.CKR_DEVICE_REMOVED, func() {}); err != nil {
				t.Fatalf("first recovery: %v", err)
			}
			err := m.DoFailOnceThen(context.Background(), pkcs11.CKR_DEVICE_REMOVED, func() {})
			if tc.secondErr == nil && err != nil || tc.secondErr != nil && !errors.Is(err, tc.secondErr) {
				t.Fatalf("token lost again at once: %v, want %v", err, tc.secondErr)
			}
			rec.mu.Lock()
			reinits := rec.recoveries["reinit"]
			rec.mu.Unlock()
			if reinits != tc.wantReinits {
				t.Fatalf("%d re-initialisations, want %d", reinits, tc.wantReinits)
			}
			// The module still works (the refusal broke nothing).
			if err := m.Ping(context.Background()); err != nil {
				t.Fatalf("ping: %v", err)
			}
		})
	}
}

// TestTokenStorageGoneAndBack takes a real SoftHSM2 token away under load
// by moving its directory out of the token store, then puts it back. What
// SoftHSM2 does (2.6.1, file backend), found by trying it:
//   - calls on token objects fail (CKR_OBJECT_HANDLE_INVALID), a new
//     login and C_GetTokenInfo fail with CKR_GENERAL_ERROR, a key lookup
//     finds nothing; never CKR_TOKEN_NOT_PRESENT or CKR_DEVICE_REMOVED;
//   - session objects (session_keys: the default) and session calls keep
//     working from memory, so signing goes on until something asks the
//     token itself: here, Ping (/readyz);
//   - the token stays broken in the process after its directory is back,
//     until C_Finalize and C_Initialize reload the store.
//
// So a failure the session does not explain is checked with C_GetTokenInfo
// and, if the token fails that too, handled as a removed token: callers get
// ErrUnavailable (never a raw PKCS#11 error, which the server would answer
// with a 500) and the module re-initialises as soon as the token is back,
// without a restart. Moving a directory is safe under running calls, unlike
// closing their sessions under them, which can crash SoftHSM2.
func TestTokenStorageGoneAndBack(t *testing.T) {
	for _, sessionKeys := range []bool{true, false} {
		t.Run(fmt.Sprintf("session_keys=%v", sessionKeys), func(t *testing.T) {
			rec := &recorder{}
			cfg := testCfg
			cfg.SessionKeys = sessionKeys
			cfg.WaitTimeout = 2 * time.Second
			m, err := hsm.Open(cfg, rec)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(m.Close)
			signer, err := m.Signer(context.Background(), p256URI)
			if err != nil {
				t.Fatal(err)
			}
			mac, err := m.HMACKey(hmacURI)
			if err != nil {
				t.Fatal(err)
			}
			digest := sha256.Sum256([]byte("under load"))
			sign := func() error {
				sig, err := signer.Sign(nil, digest[:], crypto.SHA256)
				if err == nil && !ecdsa.VerifyASN1(signer.Public().(*ecdsa.PublicKey), digest[:], sig) {
					return errors.New("signature does not verify")
				}
				return err
			}
			if err := sign(); err != nil {
				t.Fatal(err)
			}
			away, back := takeTokenAway(t)

			// Load throughout: every failure must be one a caller can
			// answer with 503.
			stop := make(chan struct{})
			var wg sync.WaitGroup
			var bad atomic.Value
			var failed atomic.Int64
			for i := 0; i < 4; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						// Odd goroutines HMAC too; each error is checked,
						// so no sign failure hides behind an HMAC result.
						errs := []error{sign()}
						if i%2 == 1 {
							_, err := mac.Sum(context.Background(), []byte("x"))
							errs = append(errs, err)
						}
						for _, err := range errs {
							if err != nil {
								failed.Add(1)
								if !errors.Is(err, hsm.ErrUnavailable) && !errors.Is(err, hsm.ErrPoolTimeout) {
									bad.Store(err)
								}
							}
						}
					}
				}()
			}
			defer func() { close(stop); wg.Wait() }()

			away()
			if err := m.Ping(context.Background()); !errors.Is(err, hsm.ErrUnavailable) {
				t.Fatalf("ping with the token gone: %v, want ErrUnavailable", err)
			}
			if err := sign(); !errors.Is(err, hsm.ErrUnavailable) {
				t.Fatalf("sign with the token gone: %v, want ErrUnavailable", err)
			}
			if _, err := mac.Sum(context.Background(), []byte("x")); !errors.Is(err, hsm.ErrUnavailable) {
				t.Fatalf("HMAC with the token gone: %v, want ErrUnavailable", err)
			}
			back()
			deadline := time.Now().Add(15 * time.Second)
			for m.Ping(context.Background()) != nil || sign() != nil {
				if time.Now().After(deadline) {
					t.Fatalf("no recovery after the token came back: ping %v, sign %v", m.Ping(context.Background()), sign())
				}
				time.Sleep(50 * time.Millisecond)
			}
			if _, err := mac.Sum(context.Background(), []byte("x")); err != nil {
				t.Fatalf("HMAC after recovery: %v", err)
			}
			if err, _ := bad.Load().(error); err != nil {
				t.Fatalf("a failure during the outage was not ErrUnavailable: %v", err)
			}
			rec.mu.Lock()
			reinits := rec.recoveries["reinit"]
			rec.mu.Unlock()
			if reinits == 0 || failed.Load() == 0 {
				t.Fatalf("the outage was not seen: %d re-initialisations, %d failed calls", reinits, failed.Load())
			}
		})
	}
}

// takeTokenAway returns functions that hide the test token from SoftHSM2
// and bring it back; a test that fails in between still gets it back.
func takeTokenAway(t *testing.T) (away, back func()) {
	t.Helper()
	o, err := softhsmtest.NewOutage(testDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = o.Back() })
	return func() { noErr(t, o.Away()) }, func() { noErr(t, o.Back()) }
}

func noErr(t *testing.T, err error) {
	if err != nil {
		t.Error(err)
	}
}

// TestOutageErrorsAnswer503: however a caller wraps them, the pool's
// outage errors reach an HTTP client as 503 hsm_unavailable, also through
// handlers that do not map them (the portal's claim-code HMAC did not, and
// answered 500 during an HSM outage).
func TestOutageErrorsAnswer503(t *testing.T) {
	for _, err := range []error{hsm.ErrUnavailable, hsm.ErrPoolTimeout} {
		wrapped := fmt.Errorf("claim code: %w", fmt.Errorf("hsm: HMAC: %w", err))
		if !errors.Is(wrapped, err) {
			t.Fatalf("%v: errors.Is lost", err)
		}
		if e := apierr.As(wrapped); e.Status != 503 || e.Code != "hsm_unavailable" || e.RetryAfter < 1 {
			t.Fatalf("%v: answered %d %s Retry-After %d", err, e.Status, e.Code, e.RetryAfter)
		}
	}
}
