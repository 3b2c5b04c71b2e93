package softhsm

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/credfactory/credfactory/hsm"
	"github.com/miekg/pkcs11"
)

// File names under the directory Provision is given.
const (
	ConfFile  = "softhsm2.conf"
	TokensDir = "tokens"
	PINFile   = "hsm-pin"
	SOPINFile = "hsm-so-pin"
)

// Provision makes sure dir holds a SoftHSM2 store with an initialised token
// labelled label, and returns the hsm.Config that opens it through module
// (the SoftHSM2 library; empty means Debian's path). created says whether
// this call made the token. It must run before any PKCS#11 use of SoftHSM in
// the process: SoftHSM reads SOFTHSM2_CONF at C_Initialize.
func Provision(module, dir, label string) (cfg hsm.Config, created bool, err error) {
	if module == "" {
		module = hsm.DefaultSoftHSMModule
	}
	if _, err := os.Stat(module); err != nil {
		return cfg, false, fmt.Errorf("SoftHSM2 module %s: %w (install the softhsm2 package)", module, err)
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return cfg, false, fmt.Errorf("softhsm dir: %w", err)
	}
	cfg = hsm.DefaultConfig()
	cfg.Module = module
	cfg.TokenLabel = label
	cfg.PINFile = filepath.Join(dir, PINFile)
	cfg.SoftHSMConf = filepath.Join(dir, ConfFile)

	if err := os.MkdirAll(filepath.Join(dir, TokensDir), 0o700); err != nil {
		return cfg, false, fmt.Errorf("softhsm token dir: %w", err)
	}
	conf := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
		filepath.Join(dir, TokensDir))
	if err := writeIfChanged(cfg.SoftHSMConf, []byte(conf), 0o600); err != nil {
		return cfg, false, err
	}
	if err := os.Setenv("SOFTHSM2_CONF", cfg.SoftHSMConf); err != nil {
		return cfg, false, fmt.Errorf("set SOFTHSM2_CONF: %w", err)
	}

	ctx := pkcs11.New(module)
	if ctx == nil {
		return cfg, false, fmt.Errorf("load %s: not a PKCS#11 library", module)
	}
	defer ctx.Destroy()
	if err := ctx.Initialize(); err != nil {
		return cfg, false, fmt.Errorf("initialise SoftHSM2: %w", err)
	}
	defer func() { _ = ctx.Finalize() }()

	if _, ok, err := findToken(ctx, label); err != nil {
		return cfg, false, err
	} else if ok {
		if _, err := os.Stat(cfg.PINFile); err != nil {
			return cfg, false, fmt.Errorf("token %q exists but its PIN file is missing: %w", label, err)
		}
		return cfg, false, nil
	}

	// The PINs go to temporary files first and are renamed into place only
	// once the token exists: a failed C_InitToken leaves no PIN file that
	// would block the next attempt, and a token never exists whose PIN was
	// not written down.
	pin, soPIN := randomPIN(), randomPIN()
	soPINFile := filepath.Join(dir, SOPINFile)
	pinTmp, err := writeSecret(cfg.PINFile, pin)
	if err != nil {
		return cfg, false, err
	}
	defer os.Remove(pinTmp)
	soTmp, err := writeSecret(soPINFile, soPIN)
	if err != nil {
		return cfg, false, err
	}
	defer os.Remove(soTmp)
	if err := initToken(ctx, label, pin, soPIN); err != nil {
		return cfg, false, fmt.Errorf("initialise token %q: %w", label, err)
	}
	if err := os.Rename(pinTmp, cfg.PINFile); err != nil {
		return cfg, false, fmt.Errorf("PIN file: %w", err)
	}
	if err := os.Rename(soTmp, soPINFile); err != nil {
		return cfg, false, fmt.Errorf("SO PIN file: %w", err)
	}
	return cfg, true, nil
}

func initToken(ctx *pkcs11.Ctx, label, pin, soPIN string) error {
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		return fmt.Errorf("list slots: %w", err)
	}
	free, found := uint(0), false
	for _, s := range slots {
		ti, err := ctx.GetTokenInfo(s)
		if err == nil && ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			free, found = s, true
			break
		}
	}
	if !found {
		return errors.New("SoftHSM2 has no free slot")
	}
	if err := ctx.InitToken(free, soPIN, label); err != nil {
		return fmt.Errorf("C_InitToken: %w", err)
	}
	// SoftHSM gives the new token a new slot ID.
	slot, ok, err := findToken(ctx, label)
	if err != nil || !ok {
		return fmt.Errorf("token not found after C_InitToken: %v", err)
	}
	sh, err := ctx.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return fmt.Errorf("open session: %w", err)
	}
	defer func() { _ = ctx.CloseSession(sh) }()
	if err := ctx.Login(sh, pkcs11.CKU_SO, soPIN); err != nil {
		return fmt.Errorf("SO login: %w", err)
	}
	defer func() { _ = ctx.Logout(sh) }()
	if err := ctx.InitPIN(sh, pin); err != nil {
		return fmt.Errorf("C_InitPIN: %w", err)
	}
	return nil
}

func findToken(ctx *pkcs11.Ctx, label string) (uint, bool, error) {
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		return 0, false, fmt.Errorf("list slots: %w", err)
	}
	for _, s := range slots {
		ti, err := ctx.GetTokenInfo(s)
		if err == nil && ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED != 0 && strings.TrimRight(ti.Label, " \x00") == label {
			return s, true, nil
		}
	}
	return 0, false, nil
}

// randomPIN is 128 bits, hex: SoftHSM accepts 4-255 bytes.
func randomPIN() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}

// writeSecret writes secret to a new 0600 temporary file beside path and
// returns its name; the caller renames it into place.
func writeSecret(path, secret string) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return "", fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	if _, err := f.WriteString(secret + "\n"); err != nil {
		f.Close()
		os.Remove(f.Name())
		return "", fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	return f.Name(), nil
}

func writeIfChanged(path string, data []byte, mode os.FileMode) error {
	if old, err := os.ReadFile(path); err == nil && string(old) == string(data) {
		return nil
	}
	tmp := fmt.Sprintf("%s.%d.tmp", path, time.Now().UnixNano())
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return os.Rename(tmp, path)
}
