package ca

import (
	"errors"
	"strings"
	"testing"
)

// TestKeyPolicy: an enrolment's key policy accepts exactly the configured
// algorithms (by default ECDSA P-256 only, TS-0003 §10.1.1.1) and a
// refusal names the refused key and what is accepted, before the
// self-signature is checked.
func TestKeyPolicy(t *testing.T) {
	def, err := NewKeyPolicy(nil)
	if err != nil {
		t.Fatal(err)
	}
	wide, err := NewKeyPolicy([]string{"ecdsa-p384", "Ed25519", "ecdsa-p384"})
	if err != nil {
		t.Fatal(err)
	}
	if got := wide.Allowed(); len(got) != 2 || got[0] != KeyECDSAP384 || got[1] != KeyEd25519 {
		t.Fatalf("allowed %v, want [ecdsa-p384 ed25519] (deduplicated, in order)", got)
	}
	badSig := func(der []byte) []byte {
		out := append([]byte(nil), der...)
		out[len(out)-3] ^= 0xff
		return out
	}
	tests := []struct {
		name   string
		policy KeyPolicy
		csr    []byte
		want   []string // in the refusal; nil means accepted
	}{
		{"default: P-256", def, makeCSR(t, testKey(t, "p256"), nil), nil},
		{"default: P-384", def, makeCSR(t, testKey(t, "p384"), nil), []string{"ECDSA P-384 keys are refused", "accepts ECDSA P-256"}},
		{"default: RSA", def, makeCSR(t, testKey(t, "rsa2048"), nil), []string{"RSA 2048 keys are refused", "accepts ECDSA P-256"}},
		{"default: Ed25519", def, makeCSR(t, testKey(t, "ed25519"), nil), []string{"Ed25519 keys are refused"}},
		{"default: P-224, which the CA never certifies", def, makeCSR(t, testKey(t, "p224"), nil), []string{"P-224", "accepts ECDSA P-256"}},
		{"refused before the signature check", def, badSig(makeCSR(t, testKey(t, "p384"), nil)), []string{"ECDSA P-384 keys are refused"}},
		{"wide: P-384", wide, makeCSR(t, testKey(t, "p384"), nil), nil},
		{"wide: Ed25519", wide, makeCSR(t, testKey(t, "ed25519"), nil), nil},
		{"wide: P-256", wide, makeCSR(t, testKey(t, "p256"), nil), []string{"ECDSA P-256 keys are refused", "accepts ECDSA P-384, Ed25519"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseCSRFor(tt.csr, tt.policy)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrUnsupportedKey) {
				t.Fatalf("err = %v, want ErrUnsupportedKey", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %q, want it to say %q", err, w)
				}
			}
		})
	}
	for _, bad := range [][]string{{"dsa"}, {"ecdsa-p521"}, {""}} {
		if _, err := NewKeyPolicy(bad); err == nil {
			t.Errorf("NewKeyPolicy(%q) accepted", bad)
		}
	}
}
