package hsm_test

import (
	"context"
	"crypto"
	"crypto/sha256"
	"strings"
	"testing"
	"time"

	"github.com/credfactory/credfactory/hsm"
)

// TestSignLatencyNeedsBothSwitches: the test-only signature delay is
// refused unless the environment names the same duration, so neither a
// copied config file nor a stray variable turns it on; set both, every
// signature takes at least that long.
func TestSignLatencyNeedsBothSwitches(t *testing.T) {
	for _, tc := range []struct {
		name    string
		latency time.Duration
		env     string
		wantErr bool
	}{
		{name: "off", latency: 0, env: ""},
		{name: "env alone does nothing", latency: 0, env: "20ms"},
		{name: "config alone", latency: 20 * time.Millisecond, env: "", wantErr: true},
		{name: "different durations", latency: 20 * time.Millisecond, env: "30ms", wantErr: true},
		{name: "env not a duration", latency: 20 * time.Millisecond, env: "yes", wantErr: true},
		{name: "negative", latency: -20 * time.Millisecond, env: "-20ms", wantErr: true},
		{name: "both agree", latency: 20 * time.Millisecond, env: "20ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(hsm.TestLatencyEnv, tc.env)
			cfg := testCfg
			cfg.TestSignLatency = tc.latency
			m, err := hsm.Open(cfg, nil)
			if tc.wantErr {
				if err == nil {
					m.Close()
					t.Fatal("opened with the test-only latency refused")
				}
				if !strings.Contains(err.Error(), "hsm.test_sign_latency") || !strings.Contains(err.Error(), hsm.TestLatencyEnv) {
					t.Fatalf("error does not name the setting and the variable: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			s, err := m.Signer(context.Background(), p256URI)
			if err != nil {
				t.Fatal(err)
			}
			digest := sha256.Sum256([]byte("latency"))
			start := time.Now()
			for range 3 {
				if _, err := s.Sign(nil, digest[:], crypto.SHA256); err != nil {
					t.Fatal(err)
				}
			}
			took := time.Since(start)
			if took < 3*tc.latency {
				t.Fatalf("3 signatures took %v, want at least %v", took, 3*tc.latency)
			}
			// Without the setting (the variable alone), 3 SoftHSM
			// signatures take well under a millisecond each.
			if tc.latency == 0 && took >= 60*time.Millisecond {
				t.Fatalf("3 signatures without the latency setting took %v", took)
			}
		})
	}
}
