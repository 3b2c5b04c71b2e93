package pki

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/credfactory/credfactory/ca"
	"github.com/credfactory/credfactory/config"
)

// RootCRLFile is the root's CRL (an ARL: it lists revoked CA certificates).
const RootCRLFile = "ca/root.crl"

// The root signs only at the ceremony (credfactory init), never online, so
// its CRL is long-lived: relying parties that check every certificate of a
// chain (openssl verify -crl_check_all, RFC 5280 §6.3) need one for the
// intermediates the root certified. init signs a fresh one when less than
// rootCRLRenewBefore of it is left.
const (
	rootCRLValidity    = 365 * 24 * time.Hour
	rootCRLRenewBefore = 90 * 24 * time.Hour
)

// RootCRL is the root's CRL as init signed it.
type RootCRL struct {
	DER        []byte
	ThisUpdate time.Time
	NextUpdate time.Time
}

// ensureRootCRL keeps RootCRLFile signed by root and valid for at least
// rootCRLRenewBefore; it lists nothing, the root having revoked no
// intermediate (a ceremony that revokes one re-signs it with the entry).
func ensureRootCRL(ctx context.Context, cfg config.Config, root *x509.Certificate, signer crypto.Signer, now time.Time) (bool, error) {
	if c, err := readRootCRL(path(cfg, RootCRLFile), root); err == nil && now.Add(rootCRLRenewBefore).Before(c.NextUpdate) {
		return false, nil
	}
	authority, err := ca.New(ca.Config{Issuer: root, Signer: signer})
	if err != nil {
		return false, fmt.Errorf("root CRL: %w", err)
	}
	crl, err := authority.SignCRL(ctx, nil, now, now.Add(rootCRLValidity), nil)
	if err != nil {
		return false, fmt.Errorf("root CRL: %w", err)
	}
	if _, err := writeIfChanged(path(cfg, RootCRLFile), crl.DER, 0o644); err != nil {
		return false, err
	}
	return true, nil
}

// readRootCRL reads and checks RootCRLFile against root.
func readRootCRL(file string, root *x509.Certificate) (*RootCRL, error) {
	der, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read root CRL: %w", err)
	}
	l, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if err := l.CheckSignatureFrom(root); err != nil {
		return nil, fmt.Errorf("%s is not signed by the root: %w", file, err)
	}
	return &RootCRL{DER: der, ThisUpdate: l.ThisUpdate, NextUpdate: l.NextUpdate}, nil
}

// loadRootCRL is what serve publishes: nil, with the reason, when init has
// not made one yet (a data directory from before it did) or it is no
// longer valid.
func loadRootCRL(cfg config.Config, root *x509.Certificate, now time.Time) (*RootCRL, error) {
	c, err := readRootCRL(path(cfg, RootCRLFile), root)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s is missing: run credfactory init", RootCRLFile)
	}
	if err != nil {
		return nil, err
	}
	if !now.Before(c.NextUpdate) {
		return nil, fmt.Errorf("%s expired at %s: run credfactory init", RootCRLFile, c.NextUpdate.Format(time.RFC3339))
	}
	return c, nil
}
