package softhsmtest

import (
	"fmt"
	"os"
	"testing"

	"github.com/credfactory/credfactory/hsm"
	"github.com/credfactory/credfactory/hsm/softhsm"
)

// KDFToken is a fresh SoftHSM2 token holding a KDF master key and a KEK,
// for the tests of packages that derive and seal shared keys in the HSM.
type KDFToken struct {
	Module *hsm.Module
	Master *hsm.HMACKey
	KEK    *hsm.AEADKey
	dir    string
}

// NewKDFToken provisions a token labelled label in a new temporary
// directory with an HMAC key at masterURI and an AES-256 key at kekURI, and
// opens it. Close removes it.
func NewKDFToken(label, masterURI, kekURI string) (*KDFToken, error) {
	dir, err := os.MkdirTemp("", "credfactory-"+label+"-")
	if err != nil {
		return nil, err
	}
	t := &KDFToken{dir: dir}
	cfg, _, err := softhsm.Provision("", dir, label)
	if err == nil {
		_, err = hsm.EnsureKeys(cfg, []hsm.KeySpec{{URI: masterURI, Type: hsm.KeyHMAC}, {URI: kekURI, Type: hsm.KeyAES256}})
	}
	if err == nil {
		t.Module, err = hsm.Open(cfg, nil)
	}
	if err == nil {
		t.Master, err = t.Module.HMACKey(masterURI)
	}
	if err == nil {
		t.KEK, err = t.Module.AEADKey(kekURI)
	}
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("KDF test token: %w", err)
	}
	return t, nil
}

// Close closes the module and removes the token.
func (t *KDFToken) Close() {
	if t.Module != nil {
		t.Module.Close()
	}
	os.RemoveAll(t.dir)
}

// Main is a test binary's TestMain body for packages whose tests share one
// KDF token (a process initialises SoftHSM once, so a second token in the
// same process would fail): it provisions the token, hands it to use, runs
// the tests, removes the token and returns the exit code for os.Exit.
func Main(m *testing.M, label, masterURI, kekURI string, use func(*KDFToken)) int {
	tok, err := NewKDFToken(label, masterURI, kekURI)
	if err != nil {
		fmt.Fprintln(os.Stderr, "HSM:", err)
		return 1
	}
	defer tok.Close()
	use(tok)
	return m.Run()
}
