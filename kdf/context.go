package kdf

import (
	"bytes"
	"context"
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

// Context is what the MAF stores instead of a key: enough to re-derive it
// (docs/architecture.md "HSM and keys"). The field set per kind is fixed (Km:
// MAFID; Kpsa: EnroleeID; Kuc: SUID and TargetFQDN), and the others must be
// empty, so one key has one stored form.
//
// Identifiers are stored as given; NFKC is applied when hashing
// (TS-0003 §10.3), so a stored form that differs only in normalisation
// derives the same key.
type Context struct {
	Version    int    `json:"version"`
	Kind       string `json:"kind"`
	KeID       string `json:"keId"`
	MAFID      string `json:"mafId,omitempty"`
	EnroleeID  string `json:"enroleeId,omitempty"`
	TargetFQDN string `json:"targetFqdn,omitempty"`
	SUID       int    `json:"suid,omitempty"`
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

// KucContext is the context of Kuc for the enrolment keID, usage suid and
// Target targetFQDN.
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
	var needMAF, needEnrolee, needTarget bool
	switch c.Kind {
	case KindKm:
		needMAF = true
	case KindKpsa:
		needEnrolee = true
	case KindKuc:
		needTarget = true
	default:
		return fmt.Errorf("%w: unknown kind %q (want %q, %q or %q)", ErrBadContext, c.Kind, KindKm, KindKpsa, KindKuc)
	}
	for _, f := range []struct {
		name, value string
		need        bool
	}{
		{"mafId", c.MAFID, needMAF},
		{"enroleeId", c.EnroleeID, needEnrolee},
		{"targetFqdn", c.TargetFQDN, needTarget},
	} {
		switch {
		case f.need && f.value == "":
			return fmt.Errorf("%w: kind %q needs %s", ErrBadContext, c.Kind, f.name)
		case !f.need && f.value != "":
			return fmt.Errorf("%w: kind %q does not use %s", ErrBadContext, c.Kind, f.name)
		case !utf8.ValidString(f.value):
			return fmt.Errorf("%w: %s is not UTF-8", ErrBadContext, f.name)
		}
	}
	if needTarget {
		if !SUID(c.SUID).Valid() {
			return fmt.Errorf("%w: kind %q: unknown suid %d", ErrBadContext, c.Kind, c.SUID)
		}
		// The Target-FQDN is checked in the form that is hashed.
		if err := checkFQDN(nfkc(c.TargetFQDN)); err != nil {
			return fmt.Errorf("%w: targetFqdn: %w", ErrBadContext, err)
		}
	} else if c.SUID != 0 {
		return fmt.Errorf("%w: kind %q does not use suid", ErrBadContext, c.Kind)
	}
	return nil
}

// Derive re-derives the key c describes: Ke from the HSM master
// (EnrolmentKey), then Km, Kpsa or Kuc from Ke (TS-0003 §10.3). Ke is
// cleared before returning; it is only ever needed transiently.
func (c Context) Derive(ctx context.Context, master Master) ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c.derive(ctx, master)
}

// DeriveStored re-derives the key of a stored context: UnmarshalContext
// (which validates it) and the derivation, without validating it twice,
// as a MAF key retrieval does on every fetch.
func DeriveStored(ctx context.Context, master Master, data []byte) ([]byte, error) {
	c, err := UnmarshalContext(data)
	if err != nil {
		return nil, err
	}
	return c.derive(ctx, master)
}

// derive is Derive for a context known to be valid.
func (c Context) derive(ctx context.Context, master Master) ([]byte, error) {
	ke, err := enrolmentKey(ctx, master, c.KeID)
	if err != nil {
		return nil, err
	}
	defer clear(ke)
	switch c.Kind {
	case KindKm:
		return Km(ke, c.MAFID), nil
	case KindKpsa:
		return Kpsa(ke, c.EnroleeID), nil
	default: // KindKuc, by Validate
		return Kuc(ke, c.SUID, c.TargetFQDN), nil
	}
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
