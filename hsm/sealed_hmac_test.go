package hsm_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/credfactory/credfactory/hsm"
)

// TestHMACSealedMatchesStdlib: the HSM's HMAC with a sealed, imported
// secret equals Go's HMAC with the plain secret, for every message, and a
// seal that does not authenticate derives nothing.
func TestHMACSealedMatchesStdlib(t *testing.T) {
	ctx := context.Background()
	m := open(t, 1, nil)
	kek, err := m.AEADKey(kekURI)
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("0123456789abcdef0123456789abcdef")
	aad := []byte("credfactory sealed Ke\x00000102030405060708090a0b0c0d0e0f@mef.sp.example")
	sealed, err := kek.Seal(ctx, secret, aad)
	if err != nil {
		t.Fatal(err)
	}
	msgs := [][]byte{
		[]byte("oneM2M Enrolment Key to Master Credential derivationmaf.sp.example"),
		[]byte("oneM2M Enrolment Key to Usage-Constrained Symmetric Key derivation23in-cse.sp.example"),
		[]byte("oneM2M Enrolment Key to Usage-Constrained Symmetric Key derivation23mn-cse.sp.example"),
		{},
	}
	got, err := kek.HMACSealed(ctx, sealed, aad, msgs)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(msgs) {
		t.Fatalf("%d MACs for %d messages", len(got), len(msgs))
	}
	for i, msg := range msgs {
		h := hmac.New(sha256.New, secret)
		h.Write(msg)
		if want := h.Sum(nil); !hmac.Equal(got[i], want) {
			t.Errorf("message %d: HSM %x, stdlib %x", i, got[i], want)
		}
	}
	// Repeatable, on the same pooled session: the imported object of the
	// first call was destroyed, not left to collide.
	for range 3 {
		again, err := kek.HMACSealed(ctx, sealed, aad, msgs[:1])
		if err != nil || !hmac.Equal(again[0], got[0]) {
			t.Fatalf("second call: %x %v", again, err)
		}
	}
	for name, in := range map[string]struct{ sealed, aad []byte }{
		"other KeID":  {sealed, []byte("credfactory sealed Ke\x00ffeeddccbbaa99887766554433221100@mef.sp.example")},
		"flipped":     {flip(sealed, 20), aad},
		"truncated":   {sealed[:20], aad},
		"flipped tag": {flip(sealed, len(sealed)-1), aad},
	} {
		if out, err := kek.HMACSealed(ctx, in.sealed, in.aad, msgs); !errors.Is(err, hsm.ErrOpen) || out != nil {
			t.Errorf("%s: %x, %v; want ErrOpen", name, out, err)
		}
	}
	// The pool still works after the refusals.
	if _, err := kek.HMACSealed(ctx, sealed, aad, msgs[:1]); err != nil {
		t.Fatalf("after refusals: %v", err)
	}
}

// TestImportedSecretCannotBeRead: the session object HMACSealed imports is
// sensitive and non-extractable: the HSM refuses to give its value back.
func TestImportedSecretCannotBeRead(t *testing.T) {
	m := open(t, 1, nil)
	readErr, extractable, sensitive, err := m.ImportedSecretLeaks(context.Background(), []byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	if readErr == nil || extractable || !sensitive {
		t.Fatalf("imported secret: read error %v, extractable %v, sensitive %v", readErr, extractable, sensitive)
	}
}

// TestHMACSealedRecovers: sessions closed from outside between calls are
// a broken pool, not a seal that fails to authenticate: the next call
// recovers and derives.
func TestHMACSealedRecovers(t *testing.T) {
	ctx := context.Background()
	rec := &recorder{}
	m := open(t, 1, rec)
	kek, err := m.AEADKey(kekURI)
	if err != nil {
		t.Fatal(err)
	}
	aad := []byte("credfactory sealed Ke\x00ab@mef.sp.example")
	sealed, err := kek.Seal(ctx, []byte("0123456789abcdef0123456789abcdef"), aad)
	if err != nil {
		t.Fatal(err)
	}
	msgs := [][]byte{[]byte("m")}
	first, err := kek.HMACSealed(ctx, sealed, aad, msgs)
	if err != nil {
		t.Fatal(err)
	}
	if err := outside(t).CloseAllSessions(m.Slot()); err != nil {
		t.Fatal(err)
	}
	again, err := kek.HMACSealed(ctx, sealed, aad, msgs)
	if err != nil || !hmac.Equal(again[0], first[0]) {
		t.Fatalf("after the sessions were closed: %x %v", again, err)
	}
	if rec.recovered() == 0 {
		t.Fatal("no recovery was observed: the breakage did not happen")
	}
}
