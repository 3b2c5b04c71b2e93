package hsm_test

import (
	"context"
	"crypto"
	"crypto/sha256"
	"fmt"
	"testing"

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
