package kdf

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// ContextVersion is the only Context.Version this package understands. It
// exists so that a change to the derivation (labels, encodings) can be
// told apart from stored contexts of the old one instead of silently
// producing different keys.
const ContextVersion = 1

// Kinds of derived key, the Context.Kind values.
const (
	KindKm   = "km"   // Km, TS-0003 §10.3
	KindKpsa = "kpsa" // Kpsa, TS-0003 §10.3
	KindKuc  = "kuc"  // Kuc, TS-0003 §10.3
)

// Roots of the hierarchy: where a context's Ke comes from, the
// Context.Root values.
const (
	// RootMaster is "master mode", credfactory's own and not TS-0003's:
	// Ke = HMAC_HSM(master, LabelEnrolmentRoot || 0x00 || KeID)
	// (docs/onem2m.md "Master mode"). Stored contexts written before
	// exporter mode existed have no root field and are master mode.
	RootMaster = ""
	// RootExporter is TS-0003 §10.3: Ke is the RSPF TLS session's export
	// (ExportEnrolmentKey), which the MEF keeps sealed by the HSM's
	// key-encryption key in Context.SealedKe.
	RootExporter = "exporter"
)

// SealedDeriver computes HMAC-SHA-256(Ke, msg) inside the HSM for a Ke that
// is kept sealed by the key-encryption key: it opens sealed (bound to aad),
// imports Ke as a non-extractable session key, signs every message with it
// (CKM_SHA256_HMAC) and destroys the key object. hsm.AEADKey is the
// production one.
type SealedDeriver interface {
	HMACSealed(ctx context.Context, sealed, aad []byte, msgs [][]byte) ([][]byte, error)
}

// Roots are what re-derivation needs: the master key for master-mode
// contexts, the sealed-key deriver for exporter-mode ones. Either may be nil
// where no context of that root is expected.
type Roots struct {
	Master Master
	Sealed SealedDeriver
}

// SealedKeAAD is the associated data a sealed exporter Ke is bound to: its
// KeID, so a sealed Ke copied into another enrolment's context fails to
// open. Part of the stored format.
func SealedKeAAD(keID string) []byte {
	return []byte("credfactory sealed Ke\x00" + keID)
}

// Context is what the MAF stores instead of a key: enough to re-derive it
// (docs/architecture.md "HSM and keys"). The field set per kind is fixed (Km:
// MAFID; Kpsa: EnroleeID; Kuc: SUID and, in contexts written before Kuc was
// derived per Target, the first TargetFQDN), and the others must be empty, so
// one key has one stored form.
//
// Identifiers are stored as given; NFKC is applied when hashing
// (TS-0003 §10.3), so a stored form that differs only in normalisation
// derives the same key.
//
// Root says where Ke comes from (RootMaster or RootExporter); an exporter
// context carries its Ke sealed by the KEK (SealedKe, base64), because
// nothing else could recover it: the TLS session it was exported from is
// gone once the enrolment answer is sent.
type Context struct {
	Version    int    `json:"version"`
	Kind       string `json:"kind"`
	KeID       string `json:"keId"`
	MAFID      string `json:"mafId,omitempty"`
	EnroleeID  string `json:"enroleeId,omitempty"`
	TargetFQDN string `json:"targetFqdn,omitempty"`
	SUID       int    `json:"suid,omitempty"`
	Root       string `json:"root,omitempty"`
	SealedKe   string `json:"sealedKe,omitempty"`
}

// WithSealedKe makes c an exporter-mode context whose Ke is sealed (the
// output of the KEK's seal with SealedKeAAD(c.KeID)).
func (c Context) WithSealedKe(sealed []byte) Context {
	c.Root = RootExporter
	c.SealedKe = base64.StdEncoding.EncodeToString(sealed)
	return c
}

// KmContext is the context of Km for the enrolment keID and the MAF mafID.
func KmContext(keID, mafID string) Context {
	return Context{Version: ContextVersion, Kind: KindKm, KeID: keID, MAFID: mafID}
}

// KpsaContext is the context of Kpsa for the enrolment keID and the
// Enrolee enroleeID.
func KpsaContext(keID, enroleeID string) Context {
	return Context{Version: ContextVersion, Kind: KindKpsa, KeID: keID, EnroleeID: enroleeID}
}

// KucContext is the context of Kuc for the enrolment keID and usage suid.
// Kuc is derived per Target (TS-0003 §10.3 hashes the Target-FQDN), so the
// Target is given when deriving (DeriveFor); targetFQDN, if not empty, is
// the Target that Derive without one uses, the form contexts had when Kuc
// was bound to the first Target only.
func KucContext(keID string, suid SUID, targetFQDN string) Context {
	return Context{Version: ContextVersion, Kind: KindKuc, KeID: keID, SUID: int(suid), TargetFQDN: targetFQDN}
}

// Validate checks c before it is stored or used. Errors wrap ErrBadContext
// (and ErrBadID where an identifier is at fault).
func (c Context) Validate() error {
	if c.Version != ContextVersion {
		return fmt.Errorf("%w: unsupported version %d (want %d)", ErrBadContext, c.Version, ContextVersion)
	}
	if err := checkCanonicalKeID(c.KeID); err != nil {
		return fmt.Errorf("%w: %w", ErrBadContext, err)
	}
	// Present/absent per kind: which fields the kind uses.
	switch c.Root {
	case RootMaster:
		if c.SealedKe != "" {
			return fmt.Errorf("%w: a master-mode context carries no sealed Ke", ErrBadContext)
		}
	case RootExporter:
		if b, err := base64.StdEncoding.DecodeString(c.SealedKe); err != nil || len(b) == 0 {
			return fmt.Errorf("%w: an exporter context needs its sealed Ke in base64", ErrBadContext)
		}
	default:
		return fmt.Errorf("%w: unknown root %q (want none or %q)", ErrBadContext, c.Root, RootExporter)
	}
	// Present/absent per kind: which fields the kind uses. Kuc's Target is
	// optional (see KucContext).
	var needMAF, needEnrolee, isKuc bool
	switch c.Kind {
	case KindKm:
		needMAF = true
	case KindKpsa:
		needEnrolee = true
	case KindKuc:
		isKuc = true
	default:
		return fmt.Errorf("%w: unknown kind %q (want %q, %q or %q)", ErrBadContext, c.Kind, KindKm, KindKpsa, KindKuc)
	}
	for _, f := range []struct {
		name, value string
		need        bool
	}{
		{"mafId", c.MAFID, needMAF},
		{"enroleeId", c.EnroleeID, needEnrolee},
		{"targetFqdn", c.TargetFQDN, isKuc},
	} {
		switch {
		case f.need && f.value == "" && f.name != "targetFqdn":
			return fmt.Errorf("%w: kind %q needs %s", ErrBadContext, c.Kind, f.name)
		case !f.need && f.value != "":
			return fmt.Errorf("%w: kind %q does not use %s", ErrBadContext, c.Kind, f.name)
		case !utf8.ValidString(f.value):
			return fmt.Errorf("%w: %s is not UTF-8", ErrBadContext, f.name)
		}
	}
	if isKuc {
		if !SUID(c.SUID).Valid() {
			return fmt.Errorf("%w: kind %q: unknown suid %d", ErrBadContext, c.Kind, c.SUID)
		}
		// The Target-FQDN is checked in the form that is hashed.
		if c.TargetFQDN != "" {
			if err := checkFQDN(nfkc(c.TargetFQDN)); err != nil {
				return fmt.Errorf("%w: targetFqdn: %w", ErrBadContext, err)
			}
		}
	} else if c.SUID != 0 {
		return fmt.Errorf("%w: kind %q does not use suid", ErrBadContext, c.Kind)
	}
	return nil
}

// Derive re-derives the key of a master-mode context c: Ke from the HSM
// master (EnrolmentKey), then Km, Kpsa or Kuc (for c.TargetFQDN) from Ke
// (TS-0003 §10.3). Ke is cleared before returning; it is only ever needed
// transiently. DeriveFor is the general form.
func (c Context) Derive(ctx context.Context, master Master) ([]byte, error) {
	return c.DeriveFor(ctx, Roots{Master: master}, "")
}

// DeriveFor re-derives the key c describes from its root, for the Target
// targetFQDN when c is a Kuc (Kuc = HMAC(Ke, label || SUID || Target-FQDN),
// TS-0003 §10.3: each Target of a key gets its own; an empty targetFQDN
// means the one stored in c). Km and Kpsa ignore targetFQDN.
//
// Master mode: Ke comes out of the HSM (an HMAC output) and the second
// level is computed here. Exporter mode: the HSM opens the sealed Ke,
// imports it and computes the second level itself; only the derived key
// comes back.
func (c Context) DeriveFor(ctx context.Context, roots Roots, targetFQDN string) ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c.derive(ctx, roots, targetFQDN)
}

// DeriveStored re-derives the key of a stored master-mode context:
// UnmarshalContext (which validates it) and the derivation, without
// validating it twice.
func DeriveStored(ctx context.Context, master Master, data []byte) ([]byte, error) {
	return DeriveStoredFor(ctx, Roots{Master: master}, data, "")
}

// DeriveStoredFor is DeriveFor on a stored context, as a MAF key retrieval
// does on every fetch.
func DeriveStoredFor(ctx context.Context, roots Roots, data []byte, targetFQDN string) ([]byte, error) {
	c, err := UnmarshalContext(data)
	if err != nil {
		return nil, err
	}
	return c.derive(ctx, roots, targetFQDN)
}

// message is what the second-level HMAC authenticates for c (and Target
// targetFQDN, for a Kuc).
func (c Context) message(targetFQDN string) ([]byte, error) {
	switch c.Kind {
	case KindKm:
		return KmMessage(c.MAFID), nil
	case KindKpsa:
		return KpsaMessage(c.EnroleeID), nil
	}
	// KindKuc, by Validate.
	if targetFQDN == "" {
		targetFQDN = c.TargetFQDN
	}
	if targetFQDN == "" {
		return nil, fmt.Errorf("%w: a usage-constrained key is derived for a Target, and none was given", ErrBadContext)
	}
	if err := checkFQDN(nfkc(targetFQDN)); err != nil {
		return nil, fmt.Errorf("Target-FQDN: %w", err)
	}
	return KucMessage(c.SUID, targetFQDN), nil
}

// derive is DeriveFor for a context known to be valid.
func (c Context) derive(ctx context.Context, roots Roots, targetFQDN string) ([]byte, error) {
	msg, err := c.message(targetFQDN)
	if err != nil {
		return nil, err
	}
	if c.Root == RootExporter {
		if roots.Sealed == nil {
			return nil, fmt.Errorf("kdf: derive for %s: exporter-mode key, but no sealed-key deriver is configured", c.KeID)
		}
		sealed, _ := base64.StdEncoding.DecodeString(c.SealedKe) // checked by Validate
		out, err := roots.Sealed.HMACSealed(ctx, sealed, SealedKeAAD(c.KeID), [][]byte{msg})
		if err != nil {
			return nil, fmt.Errorf("kdf: derive for %s from the sealed Ke: %w", c.KeID, err)
		}
		if len(out) != 1 || len(out[0]) != KeySize {
			return nil, fmt.Errorf("kdf: derive for %s: the HSM answered %d values, want one of %d bytes", c.KeID, len(out), KeySize)
		}
		return out[0], nil
	}
	if roots.Master == nil {
		return nil, fmt.Errorf("kdf: derive for %s: master-mode key, but no master key is configured", c.KeID)
	}
	ke, err := enrolmentKey(ctx, roots.Master, c.KeID)
	if err != nil {
		return nil, err
	}
	defer clear(ke)
	return hmacSHA256(ke, msg), nil
}

// Marshal validates c and encodes it as JSON for the registry.
func (c Context) Marshal() ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(c)
}

// UnmarshalContext decodes and validates a stored Context. Decoding is
// strict because the result selects a key: one JSON object with exactly the
// field names above (encoding/json would otherwise match "KEYID" to keId),
// no unknown or repeated fields, no trailing data. Errors wrap
// ErrBadContext.
func UnmarshalContext(data []byte) (Context, error) {
	if err := checkContextKeys(data); err != nil {
		return Context{}, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var c Context
	if err := dec.Decode(&c); err != nil {
		return Context{}, fmt.Errorf("%w: %w", ErrBadContext, err)
	}
	if err := c.Validate(); err != nil {
		return Context{}, err
	}
	return c, nil
}

var contextKeys = map[string]bool{
	"version": true, "kind": true, "keId": true,
	"mafId": true, "enroleeId": true, "targetFqdn": true, "suid": true,
	"root": true, "sealedKe": true,
}

// checkContextKeys walks the top-level object once to reject what
// encoding/json tolerates: case-insensitive and duplicate keys, and data
// after the object.
func checkContextKeys(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadContext, err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return fmt.Errorf("%w: not a JSON object", ErrBadContext)
	}
	seen := make(map[string]bool, len(contextKeys))
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("%w: %w", ErrBadContext, err)
		}
		key, _ := tok.(string) // object keys are always strings
		if !contextKeys[key] {
			return fmt.Errorf("%w: unknown field %q", ErrBadContext, key)
		}
		if seen[key] {
			return fmt.Errorf("%w: repeated field %q", ErrBadContext, key)
		}
		seen[key] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return fmt.Errorf("%w: field %q: %w", ErrBadContext, key, err)
		}
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return fmt.Errorf("%w: %w", ErrBadContext, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: data after the JSON object", ErrBadContext)
	}
	return nil
}
