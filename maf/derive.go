package maf

import (
	"context"
	"fmt"
	"slices"

	"github.com/credfactory/credfactory/kdf"
	"github.com/credfactory/credfactory/store"
)

// roots are the key hierarchy's roots for re-derivation: the HSM master key
// (master mode) and, when the KEK can derive from what it sealed
// (hsm.AEADKey), the sealed exporter Ke (exporter mode).
func (r *Registry) roots() kdf.Roots {
	roots := kdf.Roots{Master: r.master}
	if s, ok := r.kek.(kdf.SealedDeriver); ok {
		roots.Sealed = s
	}
	return roots
}

// DeriveFor recovers a shared-key credential's key as the Target
// targetFQDN receives it: a usage-constrained key (Kuc) is derived with
// that Target's FQDN (TS-0003 §10.3: Kuc = HMAC(Ke, label || SUID ||
// Target-FQDN)), so two Targets of one key get different keys, each equal
// to what the device derives for that Target; Km and Kpsa are the same for
// every Target. An empty targetFQDN derives a Kuc for the Target its stored
// context names, if any (master-mode contexts from before per-Target
// derivation).
//
// The caller must have checked that targetFQDN is one of c.TargetIDs:
// this only derives. In exporter mode the HSM computes the key from the
// sealed Ke; the key leaves the HSM here, because it is what a fetch
// returns. A key a trusted OBF forwarded is opened as sealed: it is the
// OBF's value, the same for every Target.
func (r *Registry) DeriveFor(ctx context.Context, c store.Credential, targetFQDN string) ([]byte, error) {
	switch {
	case c.Type != store.TypePSK:
		return nil, fmt.Errorf("credential %s is not a shared key", c.ID)
	case len(c.KDFContext) > 0:
		key, err := kdf.DeriveStoredFor(ctx, r.roots(), c.KDFContext, targetFQDN)
		if err != nil {
			return nil, fmt.Errorf("re-derive key of %s: %w", c.ID, err)
		}
		return key, nil
	case len(c.SealedKey) > 0:
		key, err := r.kek.Open(ctx, c.SealedKey, []byte(c.ID))
		if err != nil {
			return nil, fmt.Errorf("open sealed key of %s: %w", c.ID, err)
		}
		return key, nil
	}
	return nil, fmt.Errorf("credential %s has neither a derivation context nor a sealed key", c.ID)
}

// fetchingTarget is the name under which a caller known by names fetches
// c: the first of c's Targets it answers to, in the order the key lists
// them. "" if none.
func fetchingTarget(c store.Credential, names []string) string {
	for _, t := range c.TargetIDs {
		if slices.Contains(names, t) {
			return t
		}
	}
	return ""
}

// SealEnrolmentKey seals an exporter-mode Ke with the KEK, bound to its
// KeID (kdf.SealedKeAAD), for the credential's derivation context
// (kdf.Context.WithSealedKe).
func (r *Registry) SealEnrolmentKey(ctx context.Context, keID string, ke []byte) ([]byte, error) {
	sealed, err := r.kek.Seal(ctx, ke, kdf.SealedKeAAD(keID))
	if err != nil {
		return nil, fmt.Errorf("seal enrolment key %s: %w", keID, err)
	}
	return sealed, nil
}
