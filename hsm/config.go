package hsm

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// PINEnv is the environment variable that carries the user PIN. It wins over
// Config.PINFile so that a container can inject the secret without a file.
const PINEnv = "CREDFACTORY_HSM_PIN"

// TestLatencyEnv must hold the same duration as Config.TestSignLatency for
// that setting to be accepted: a config file copied from a test bench into
// production, or an environment variable alone, cannot slow a real HSM down.
const TestLatencyEnv = "CREDFACTORY_TEST_HSM_LATENCY"

// Config selects a PKCS#11 module and token and sizes the session pool. The
// PIN is deliberately not a field: it comes from PINEnv or PINFile only, so it
// can never end up in a config dump, a flag or a log line.
type Config struct {
	// Module is the path of the PKCS#11 shared library.
	Module string `yaml:"module" help:"path of the PKCS#11 module (shared library)"`
	// TokenLabel and TokenSerial select the token; exactly one must be set.
	TokenLabel  string `yaml:"token_label" help:"label of the token to use (or set token_serial)"`
	TokenSerial string `yaml:"token_serial" help:"serial number of the token to use (or set token_label)"`
	// PINFile holds the user PIN (trailing newline ignored) when PINEnv is unset.
	PINFile string `yaml:"pin_file" help:"file holding the user PIN; CREDFACTORY_HSM_PIN overrides it"`
	// MaxSessions bounds the pool. SoftHSM serialises on one lock, so 2 is
	// the efficient size there; network HSMs want more.
	MaxSessions int `yaml:"max_sessions" help:"sessions in the pool; SoftHSM is most efficient at 1-2, network HSMs want more"`
	// WaitTimeout caps how long a caller waits for a session even when its
	// own context allows longer (crypto.Signer.Sign has no context).
	WaitTimeout time.Duration `yaml:"wait_timeout" help:"longest wait for a free session before the request fails"`
	// SessionKeys uses a session copy of each key (see keyHandle.handle).
	SessionKeys bool `yaml:"session_keys" help:"use a session copy of each key, made once per login: SoftHSM signs 1.5x and HMACs 2.5x faster without its per-use file I/O; HSMs that refuse fall back to the token object"`
	// SoftHSMConf, for SoftHSM2 only, is exported as SOFTHSM2_CONF before the
	// module loads, so the token store can live under the data directory.
	SoftHSMConf string `yaml:"softhsm2_conf" help:"SoftHSM2 only: its config file, exported as SOFTHSM2_CONF before the module loads"`
	// TestSignLatency holds the session for this long after every
	// signature: a network HSM's round trip, so that replica scaling can be
	// measured on one machine where SoftHSM would otherwise only compete
	// for the same CPU (deploy/SIZING.md). Test only: Validate refuses it
	// unless TestLatencyEnv holds the same duration.
	TestSignLatency time.Duration `yaml:"test_sign_latency" help:"test only, 0 (off) in production: a fixed delay per signature standing in for a network HSM; refused unless CREDFACTORY_TEST_HSM_LATENCY holds the same duration"`
}

// DefaultConfig is the embedded SoftHSM default; init fills in the paths.
func DefaultConfig() Config {
	return Config{
		Module:      DefaultSoftHSMModule,
		TokenLabel:  "credfactory",
		MaxSessions: 2,
		WaitTimeout: 5 * time.Second,
		SessionKeys: true,
	}
}

// DefaultSoftHSMModule is where Debian's softhsm2 package puts the module.
const DefaultSoftHSMModule = "/usr/lib/softhsm/libsofthsm2.so"

// Validate reports the first thing wrong with c.
func (c Config) Validate() error {
	var errs []error
	if c.Module == "" {
		errs = append(errs, errors.New("hsm.module is empty"))
	}
	if (c.TokenLabel == "") == (c.TokenSerial == "") {
		errs = append(errs, errors.New("set exactly one of hsm.token_label and hsm.token_serial"))
	}
	if c.MaxSessions < 1 {
		errs = append(errs, fmt.Errorf("hsm.max_sessions must be at least 1, got %d", c.MaxSessions))
	}
	if c.WaitTimeout <= 0 {
		// crypto.Signer.Sign has no context: without this bound a caller
		// could wait forever for a session.
		errs = append(errs, errors.New("hsm.wait_timeout must be positive"))
	}
	if c.TestSignLatency != 0 {
		env, err := time.ParseDuration(os.Getenv(TestLatencyEnv))
		if c.TestSignLatency < 0 || err != nil || env != c.TestSignLatency {
			errs = append(errs, fmt.Errorf("hsm.test_sign_latency %v is a test-only setting: it is refused unless %s=%v is set too",
				c.TestSignLatency, TestLatencyEnv, c.TestSignLatency))
		}
	}
	return errors.Join(errs...)
}

// PIN returns the user PIN from PINEnv or PINFile. Errors never carry the PIN.
func (c Config) PIN() (string, error) {
	if pin, ok := os.LookupEnv(PINEnv); ok && pin != "" {
		return pin, nil
	}
	if c.PINFile == "" {
		return "", fmt.Errorf("no HSM PIN: set %s or hsm.pin_file", PINEnv)
	}
	b, err := os.ReadFile(c.PINFile)
	if err != nil {
		return "", fmt.Errorf("read HSM PIN file: %w", err)
	}
	pin := strings.TrimRight(string(b), "\r\n")
	if pin == "" {
		return "", fmt.Errorf("HSM PIN file %s is empty", c.PINFile)
	}
	return pin, nil
}

// exportSoftHSMConf sets SOFTHSM2_CONF, which SoftHSM reads at C_Initialize,
// so it must run before the library is initialised.
func (c Config) exportSoftHSMConf() error {
	if c.SoftHSMConf == "" {
		return nil
	}
	if err := os.Setenv("SOFTHSM2_CONF", c.SoftHSMConf); err != nil {
		return fmt.Errorf("set SOFTHSM2_CONF: %w", err)
	}
	return nil
}
