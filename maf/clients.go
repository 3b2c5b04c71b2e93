package maf

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/credfactory/credfactory/apierr"
	"github.com/credfactory/credfactory/kdf"
	"github.com/credfactory/credfactory/store"
	"github.com/google/uuid"
)

// Limits on what a registration may carry (docs/maf.md).
const (
	// MaxClientLifetime bounds a client registration's expirationTime: a
	// registration is renewed by an update, so a leaked client secret
	// dies with it at the latest.
	MaxClientLifetime = 366 * 24 * time.Hour
	maxLabels         = 32
	maxLabelLen       = 128
	maxTargets        = 16
	maxIDLen          = 253
	minKeyLen         = 16
	maxKeyLen         = 64
)

// ErrNotOwned: the adminFQDN is not the caller's tenant's.
var ErrNotOwned = store.ErrNotOwned

// ClientRegistration is a client registration request (TS-0003 §8.8).
type ClientRegistration struct {
	// ClientID is the client's FQDN (an Enrolment Target) or CSE-ID.
	ClientID  string
	AdminFQDN string
	Labels    []string
	ExpiresAt time.Time
	Tenant    string
	Actor     string
}

// RegisteredClient is a registration's answer: the record and, once, the
// secret of its assignedSymmKeyID.
type RegisteredClient struct {
	store.MAFClient
	Secret []byte
}

func badRequest(code, msg string) error {
	return &apierr.Error{Status: http.StatusBadRequest, Code: code, Message: msg}
}

// checkClientID accepts an FQDN (RFC 1123 host name, fully qualified) or a
// CSE-ID, SP-relative ("/cse-1") or absolute ("//sp.example/cse-1")
// (TS-0001 §7.2; ONEM2M identifiers).
func checkClientID(id string) error {
	if len(id) > maxIDLen {
		return badRequest("bad_client_id", "a client ID is at most 253 characters")
	}
	if rest, ok := strings.CutPrefix(id, "//"); ok {
		host, cse, ok := strings.Cut(rest, "/")
		if ok && checkFQDN(host) == nil && checkRelative(cse) == nil {
			return nil
		}
	} else if rest, ok := strings.CutPrefix(id, "/"); ok {
		if checkRelative(rest) == nil {
			return nil
		}
	} else if checkFQDN(id) == nil {
		return nil
	}
	return badRequest("bad_client_id", "a client is named by its FQDN (in-cse.example.com) or CSE-ID (/cse-1 or //sp.example/cse-1)")
}

// withinAdminDomain reports whether a client's DNS name lies in its
// adminFQDN's domain: a tenant names only Targets in a domain the operator
// gave it, so it cannot take (and so deny) another's Target name. An
// SP-relative CSE-ID has no DNS name; the SP assigns those, and a
// registered client reaches only its own tenant's keys whatever its name.
func withinAdminDomain(clientID, adminFQDN string) bool {
	host := clientID
	if rest, ok := strings.CutPrefix(clientID, "//"); ok {
		host, _, _ = strings.Cut(rest, "/")
	} else if strings.HasPrefix(clientID, "/") {
		return true
	}
	host, admin := strings.ToLower(host), strings.ToLower(adminFQDN)
	return host == admin || strings.HasSuffix(host, "."+admin)
}

// checkFQDN and checkRelative reuse kdf's strict KmID rules (TS-0003
// §10.6): an ID that passes makes a valid KmID.
func checkFQDN(s string) error     { _, err := kdf.KmID("x", s); return err }
func checkRelative(s string) error { _, err := kdf.KmID(s, "maf.example"); return err }

func checkLabels(labels []string) error {
	if len(labels) > maxLabels {
		return badRequest("bad_labels", fmt.Sprintf("at most %d labels", maxLabels))
	}
	for _, l := range labels {
		if l == "" || len(l) > maxLabelLen || strings.ContainsFunc(l, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return badRequest("bad_labels", fmt.Sprintf("a label is 1-%d printable characters", maxLabelLen))
		}
	}
	return nil
}

func (r *Registry) checkExpiry(at, limit time.Time) error {
	now := r.now()
	switch {
	case at.IsZero():
		return badRequest("bad_expiration", "expirationTime is required (RFC 3339)")
	case !at.After(now):
		return badRequest("bad_expiration", "expirationTime is in the past")
	case at.After(limit):
		return badRequest("bad_expiration", "expirationTime is later than allowed: "+limit.Format(time.RFC3339))
	}
	return nil
}

// RegisterClient registers a CSE or Enrolment Target with the MAF
// (TS-0003 §8.8) and assigns it a symmetric key, relative@mafFQDN, the
// secret of which is returned once and stored as its SHA-256 only.
func (r *Registry) RegisterClient(ctx context.Context, req ClientRegistration, mafFQDN string) (RegisteredClient, error) {
	if err := checkClientID(req.ClientID); err != nil {
		return RegisteredClient{}, err
	}
	if checkFQDN(req.AdminFQDN) != nil {
		return RegisteredClient{}, badRequest("bad_admin_fqdn", "adminFQDN must be a fully qualified domain name")
	}
	if !withinAdminDomain(req.ClientID, req.AdminFQDN) {
		return RegisteredClient{}, &apierr.Error{Status: http.StatusForbidden, Code: "client_outside_admin_fqdn",
			Message: "a client's FQDN (or an absolute CSE-ID's host) must be its adminFQDN or a name under it"}
	}
	if err := checkLabels(req.Labels); err != nil {
		return RegisteredClient{}, err
	}
	if err := r.checkExpiry(req.ExpiresAt, r.now().Add(MaxClientLifetime)); err != nil {
		return RegisteredClient{}, err
	}
	secret := make([]byte, 32)
	rel := make([]byte, 16)
	if _, err := rand.Read(secret); err != nil {
		return RegisteredClient{}, err
	}
	if _, err := rand.Read(rel); err != nil {
		return RegisteredClient{}, err
	}
	// "c" keeps client key IDs apart from the MEF's hex KmIDs.
	keyID, err := kdf.KmID("c"+hex.EncodeToString(rel), mafFQDN)
	if err != nil {
		return RegisteredClient{}, fmt.Errorf("assign a client key ID: %w", err)
	}
	sum := sha256.Sum256(secret)
	now := r.now()
	c := store.MAFClient{ID: uuid.NewString(), ClientID: req.ClientID, Tenant: req.Tenant, AdminFQDN: strings.ToLower(req.AdminFQDN),
		Labels: req.Labels, SymmKeyID: keyID, SecretSHA256: sum[:], ExpiresAt: req.ExpiresAt.UTC(), CreatedAt: now, UpdatedAt: now}
	if c.Labels == nil {
		c.Labels = []string{}
	}
	if err := r.st.CreateMAFClient(ctx, c, req.Actor); err != nil {
		return RegisteredClient{}, err
	}
	return RegisteredClient{MAFClient: c, Secret: secret}, nil
}

// DecodeKey reads a key or secret given in base64, standard or URL
// alphabet, padded or not.
func DecodeKey(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.RawURLEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.StdEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, errors.New("not base64")
}

// Errors of symmetric-key authentication to the MAF.
var (
	errBadKeyCredential = &apierr.Error{Status: http.StatusUnauthorized, Code: "bad_key_credential",
		Message: "unknown key ID or wrong key: give Authorization: Bearer <assignedSymmKeyID or KmID>:<base64 key>"}
	errRegistrationExpired = &apierr.Error{Status: http.StatusUnauthorized, Code: "client_registration_expired",
		Message: "this client registration has expired: the administrating stakeholder renews it (PATCH /maf/v1/clients/{registrationId})"}
	errTenantDisabled = &apierr.Error{Status: http.StatusUnauthorized, Code: "stakeholder_disabled",
		Message: "the stakeholder administering this client is disabled"}
)

// authenticateKey checks a symmetric-key credential presented to the MAF:
// a registered client's assignedSymmKeyID and secret, or a device's KmID
// and Km (SUID 21, TS-0003 §10.6), which the MAF re-derives to compare.
func (r *Registry) authenticateKey(ctx context.Context, keyID string, key []byte) (caller, error) {
	keyID = strings.ToLower(keyID) // KmIDs are case-insensitive (TS-0003 §10.6)
	cl, err := r.st.MAFClientBy(ctx, "symm_key_id", keyID)
	switch {
	case err == nil:
		sum := sha256.Sum256(key)
		if subtle.ConstantTimeCompare(sum[:], cl.SecretSHA256) != 1 {
			return caller{}, errBadKeyCredential
		}
		if cl.TenantDisabled {
			return caller{}, errTenantDisabled
		}
		if !r.now().Before(cl.ExpiresAt) {
			return caller{}, errRegistrationExpired
		}
		return caller{names: []string{cl.ClientID}, tenant: cl.Tenant, spAdmin: cl.TenantRole == store.RoleSPAdmin, client: &cl}, nil
	case !errors.Is(err, store.ErrNotFound):
		return caller{}, err
	}
	cred, err := r.st.Credential(ctx, store.ByKeyID, keyID)
	if errors.Is(err, store.ErrNotFound) {
		return caller{}, errBadKeyCredential
	}
	if err != nil {
		return caller{}, err
	}
	// Only Km authenticates to the MAF: a Kpsa or Kuc is its Targets' too.
	if cred.Type != store.TypePSK || cred.SUID != int(kdf.SUIDRSPFMAF) && cred.SUID != int(kdf.SUIDPreMAF) {
		return caller{}, errBadKeyCredential
	}
	want, err := r.Key(ctx, cred)
	if err != nil {
		return caller{}, err
	}
	if subtle.ConstantTimeCompare(want, key) != 1 {
		return caller{}, errBadKeyCredential
	}
	switch {
	case cred.Status == store.StatusRevoked:
		return caller{}, &apierr.Error{Status: http.StatusUnauthorized, Code: "key_credential_revoked", Message: "this Km was revoked"}
	case cred.Status != store.StatusActive || !r.now().Before(cred.NotAfter):
		return caller{}, &apierr.Error{Status: http.StatusUnauthorized, Code: "key_credential_expired", Message: "this Km has expired: enrol again"}
	}
	return caller{names: []string{cred.AssignedID}, assignedID: cred.AssignedID}, nil
}

// KeyRegistration is a key registration request (TS-0003 §8.8).
type KeyRegistration struct {
	AdminFQDN string
	SUID      kdf.SUID
	TargetIDs []string
	Labels    []string
	ExpiresAt time.Time
	// Value is the key, or nil for the MAF to generate one.
	Value []byte
}

// RegisteredKey is a key registration's answer; Value is set when the
// MAF generated the key.
type RegisteredKey struct {
	store.MAFKey
	RelativeKeyID string
	Value         []byte
}

func (r *Registry) checkTargets(targets []string) error {
	if len(targets) == 0 || len(targets) > maxTargets {
		return badRequest("bad_target_ids", fmt.Sprintf("give 1-%d targetIDs", maxTargets))
	}
	for _, t := range targets {
		if t == "" || len(t) > maxIDLen || strings.ContainsFunc(t, func(r rune) bool { return r <= 0x20 || r == 0x7f }) {
			return badRequest("bad_target_ids", "a target ID is an FQDN, CSE-ID or AE-ID without spaces, at most 253 characters")
		}
	}
	return nil
}

// sealAAD binds a sealed registered key to its key ID, apart from the
// Credential-IDs that bind forwarded keys.
func sealAAD(keyID string) []byte { return []byte("maf-key:" + keyID) }

// RegisterKey registers a symmetric key on behalf of a registered client
// (TS-0003 §8.8). The key, given or generated, is sealed by the HSM's
// KEK before it is stored; a key cannot outlive its client's registration.
func (r *Registry) RegisterKey(ctx context.Context, client store.MAFClient, req KeyRegistration, mafFQDN, actor string) (RegisteredKey, error) {
	switch {
	case checkFQDN(req.AdminFQDN) != nil:
		return RegisteredKey{}, badRequest("bad_admin_fqdn", "adminFQDN must be a fully qualified domain name")
	case req.SUID < kdf.SUIDMAFSAEF || req.SUID > kdf.SUIDMAFESDataSignature:
		return RegisteredKey{}, badRequest("bad_suid", "a MAF-registered key is for SUID 32-35 (MAF-distributed SAEF, ESPrim, ESData; TS-0004 m2m:suid)")
	case req.Value != nil && (len(req.Value) < minKeyLen || len(req.Value) > maxKeyLen):
		return RegisteredKey{}, badRequest("bad_key", fmt.Sprintf("a key value is %d-%d bytes, base64", minKeyLen, maxKeyLen))
	}
	if err := r.checkTargets(req.TargetIDs); err != nil {
		return RegisteredKey{}, err
	}
	if err := checkLabels(req.Labels); err != nil {
		return RegisteredKey{}, err
	}
	if err := r.checkExpiry(req.ExpiresAt, client.ExpiresAt); err != nil {
		return RegisteredKey{}, err
	}
	rel := make([]byte, 16)
	if _, err := rand.Read(rel); err != nil {
		return RegisteredKey{}, err
	}
	relID := "k" + hex.EncodeToString(rel)
	keyID, err := kdf.KmID(relID, mafFQDN)
	if err != nil {
		return RegisteredKey{}, fmt.Errorf("assign a key ID: %w", err)
	}
	value, generated := req.Value, req.Value == nil
	if generated {
		value = make([]byte, 32)
		if _, err := rand.Read(value); err != nil {
			return RegisteredKey{}, err
		}
	}
	sealed, err := r.kek.Seal(ctx, value, sealAAD(keyID))
	if err != nil {
		return RegisteredKey{}, fmt.Errorf("seal registered key: %w", err)
	}
	now := r.now()
	labels := req.Labels
	if labels == nil {
		labels = []string{}
	}
	k := store.MAFKey{ID: keyID, Tenant: client.Tenant, AdminFQDN: strings.ToLower(req.AdminFQDN), RegistrationID: client.ID,
		SUID: int(req.SUID), TargetIDs: req.TargetIDs, Labels: labels, SealedKey: sealed, ExpiresAt: req.ExpiresAt.UTC(), CreatedAt: now, UpdatedAt: now}
	if err := r.st.CreateMAFKey(ctx, k, actor); err != nil {
		return RegisteredKey{}, err
	}
	out := RegisteredKey{MAFKey: k, RelativeKeyID: relID}
	if generated {
		out.Value = value
	}
	return out, nil
}

// OpenKey unseals a registered key in the HSM for an authorised reader.
func (r *Registry) OpenKey(ctx context.Context, k store.MAFKey) ([]byte, error) {
	v, err := r.kek.Open(ctx, k.SealedKey, sealAAD(k.ID))
	if err != nil {
		return nil, fmt.Errorf("open registered key %s: %w", k.ID, err)
	}
	return v, nil
}
