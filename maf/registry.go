package maf

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/credfactory/credfactory/crlreason"
	"github.com/credfactory/credfactory/kdf"
	"github.com/credfactory/credfactory/store"
)

// Sealer seals secrets with the HSM's key-encryption key (hsm.AEADKey).
type Sealer interface {
	Seal(ctx context.Context, plaintext, aad []byte) ([]byte, error)
	Open(ctx context.Context, sealed, aad []byte) ([]byte, error)
}

// Errors a caller decides on (the API maps them to statuses).
var (
	ErrUnknownKey    = errors.New("maf: no credential for that key ID and usage")
	ErrNotAuthorised = errors.New("maf: caller is not authorised for this credential")
	// ErrAmbiguousKey: the KeID names keys of more than one device.
	ErrAmbiguousKey = errors.New("maf: that key ID names keys of more than one device")
	ErrRevoked      = errors.New("maf: credential revoked")
	ErrExpired      = errors.New("maf: credential expired")
)

// Registry is the MAF's logic over the store. Safe for concurrent use.
type Registry struct {
	st     *store.Store
	batch  *store.Batcher
	master kdf.Master
	kek    Sealer
	now    func() time.Time
	// onRevoke are called after a revocation that revoked something
	// (the CRL publisher marks its CRL stale). Set before serving.
	onRevoke []func()
}

// OnRevoke registers f to run after every revocation that changed a
// credential. Call it while wiring, before the registry is in use.
func (r *Registry) OnRevoke(f func()) { r.onRevoke = append(r.onRevoke, f) }

// New builds a Registry. batch may be nil (every redemption commits alone).
func New(st *store.Store, batch *store.Batcher, master kdf.Master, kek Sealer) *Registry {
	return &Registry{st: st, batch: batch, master: master, kek: kek, now: time.Now}
}

// Redeem redeems an enrolment token and records its credential atomically,
// sharing the commit with concurrent redemptions when a Batcher is set.
func (r *Registry) Redeem(ctx context.Context, red store.Redemption) (store.Redeemed, error) {
	if r.batch != nil {
		return r.batch.Redeem(ctx, red)
	}
	return r.st.Redeem(ctx, red)
}

// Register records a credential for an assigned ID (key registration,
// TS-0003 §8.8). A shared key in c.SealedKey must already be sealed: use
// SealKey.
func (r *Registry) Register(ctx context.Context, c store.Credential) error {
	if c.CreatedAt.IsZero() {
		c.CreatedAt = r.now()
	}
	if c.Status == "" {
		c.Status = store.StatusActive
	}
	return r.st.RegisterCredential(ctx, c)
}

// SealKey seals a shared key a trusted OBF forwarded, bound to its
// Credential-ID so a sealed key cannot be moved to another row.
func (r *Registry) SealKey(ctx context.Context, credentialID string, key []byte) ([]byte, error) {
	sealed, err := r.kek.Seal(ctx, key, []byte(credentialID))
	if err != nil {
		return nil, fmt.Errorf("seal key for %s: %w", credentialID, err)
	}
	return sealed, nil
}

// Get retrieves one credential.
func (r *Registry) Get(ctx context.Context, by store.CredentialBy, value any) (store.Credential, error) {
	return r.st.Credential(ctx, by, value)
}

// List returns an assigned ID's credentials, history included.
func (r *Registry) List(ctx context.Context, assignedID string) ([]store.Credential, error) {
	return r.st.Credentials(ctx, assignedID)
}

// Revoke revokes one credential or an assigned ID's (optionally only some
// usages), recording the actor.
func (r *Registry) Revoke(ctx context.Context, rev store.Revocation) ([]string, error) {
	if rev.At.IsZero() {
		rev.At = r.now()
	}
	revoked, err := r.st.Revoke(ctx, rev)
	if err == nil && len(revoked) > 0 {
		for _, f := range r.onRevoke {
			f()
		}
	}
	return revoked, err
}

// Deregister ends an assigned ID's registration: every active credential is
// revoked (cessation of operation). The rows stay, as the history.
func (r *Registry) Deregister(ctx context.Context, assignedID, actor, tenant string) ([]string, error) {
	return r.Revoke(ctx, store.Revocation{AssignedID: assignedID, Reason: crlreason.CessationOfOperation, Actor: actor, Tenant: tenant})
}

// Fetched is a key retrieval's answer (TS-0003 §8.3.5: status, credential,
// enrollee ID, lifetime).
type Fetched struct {
	Credential store.Credential
	Key        []byte
}

// Fetch answers /fetchCredentials/<KeID>/<SUID> for a Target that knows
// itself by any of names: the credential must list one of them as a target,
// be active and unexpired. The key is re-derived (DeriveFor: a
// usage-constrained key for the first of the key's targets the caller is)
// or unsealed in the HSM; it is never read from the database.
func (r *Registry) Fetch(ctx context.Context, keID string, suid kdf.SUID, names []string) (Fetched, error) {
	creds, err := r.st.CredentialForTarget(ctx, keID, int(suid))
	if err != nil {
		return Fetched{}, err
	}
	if len(creds) == 0 {
		return Fetched{}, ErrUnknownKey
	}
	// A KeID names one device's key (the MEF assigns it, TS-0003
	// §10.3.4). Rows of one KeID for two devices can only be keys
	// forwarded before the MEF assigned forwarded KeIDs, under an ID an
	// OBF chose: answering either could hand one device's key to the
	// other's Targets, so neither is answered.
	for _, c := range creds[1:] {
		if c.DeviceID != creds[0].DeviceID {
			return Fetched{}, ErrAmbiguousKey
		}
	}
	// Of the credentials this target may fetch, an active one wins over
	// older rows of the same KeID and usage that a re-registration
	// superseded; only when none is active does the refusal say why.
	var c *store.Credential
	for i := range creds {
		if !slices.ContainsFunc(creds[i].TargetIDs, func(t string) bool { return slices.Contains(names, t) }) {
			continue
		}
		if c == nil || c.Status != store.StatusActive && creds[i].Status == store.StatusActive {
			c = &creds[i]
		}
	}
	if c == nil {
		return Fetched{}, ErrNotAuthorised
	}
	switch {
	case c.Status == store.StatusRevoked:
		return Fetched{}, ErrRevoked
	case c.Status != store.StatusActive || !r.now().Before(c.NotAfter):
		return Fetched{}, ErrExpired
	}
	key, err := r.DeriveFor(ctx, *c, fetchingTarget(*c, names))
	if err != nil {
		return Fetched{}, err
	}
	return Fetched{Credential: *c, Key: key}, nil
}

// Key recovers a shared-key credential's key in the HSM; a
// usage-constrained key for the Target its context names (DeriveFor is the
// per-Target form).
func (r *Registry) Key(ctx context.Context, c store.Credential) ([]byte, error) {
	return r.DeriveFor(ctx, c, "")
}
