package kdf_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"sync"
	"testing"
)

// softMaster is a software stand-in for the HSM KDF master key: the same
// HMAC-SHA256(master, label || 0x00 || context) as hsm.HMACKey.Derive
// (docs/architecture.md "HSM and keys"). With record set it keeps what it was
// asked, so tests can check the HSM sees exactly the label and KeID bytes;
// benchmarks leave it off.
type softMaster struct {
	key    []byte
	record bool

	mu    sync.Mutex
	calls []masterCall
}

type masterCall struct {
	label   string
	context string
}

func newSoftMaster(t testing.TB, keyHex string) *softMaster {
	t.Helper()
	k, err := hex.DecodeString(keyHex)
	if err != nil {
		t.Fatalf("master key %q: %v", keyHex, err)
	}
	return &softMaster{key: k}
}

func newRecordingMaster(t testing.TB, keyHex string) *softMaster {
	m := newSoftMaster(t, keyHex)
	m.record = true
	return m
}

func (m *softMaster) Derive(ctx context.Context, label string, data []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if m.record {
		m.mu.Lock()
		m.calls = append(m.calls, masterCall{label, string(data)})
		m.mu.Unlock()
	}
	mac := hmac.New(sha256.New, m.key)
	mac.Write([]byte(label))
	mac.Write([]byte{0})
	mac.Write(data)
	return mac.Sum(nil), nil
}

// funcMaster lets a test make the master misbehave.
type funcMaster func(ctx context.Context, label string, data []byte) ([]byte, error)

func (f funcMaster) Derive(ctx context.Context, label string, data []byte) ([]byte, error) {
	return f(ctx, label, data)
}
