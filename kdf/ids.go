package kdf

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// RelativeIDSize is the length of a RelativeKeID: the first 16 bytes of the
// 48-byte RFC 5705 export in TS-0003 §10.3 (exporter mode), or 16 random
// bytes (master mode).
const RelativeIDSize = 16

// NewRelativeID returns RelativeIDSize random bytes for a new master-mode
// KeID. A master-mode Ke comes from the HSM master key, not from a TLS
// exporter, so the RelativeKeID only has to be unique, and 128 random bits
// are without a registry round trip.
func NewRelativeID() ([]byte, error) {
	b := make([]byte, RelativeIDSize)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("kdf: new relative ID: %w", err)
	}
	return b, nil
}

// KeID returns lower-case hex(relative) "@" mefFQDN (TS-0003 §10.3.4).
//
// The FQDN is lower-cased too (DNS names compare case-insensitively,
// RFC 4343) so that one enrolment has one KeID: the KeID is the HSM context
// for Ke, and two spellings would be two keys. KeID does not validate its
// arguments (relative should be RelativeIDSize bytes, mefFQDN a DNS name);
// ParseKeID does, and Context.Validate and EnrolmentKey refuse a KeID that
// is not canonical.
func KeID(relative []byte, mefFQDN string) string {
	return hex.EncodeToString(relative) + "@" + strings.ToLower(mefFQDN)
}

// ParseKeID splits and checks a KeID (TS-0003 §10.3.4): RelativeIDSize bytes
// in hex, "@", a DNS name. Hex and FQDN are accepted in either case (a
// Target may echo one back upper-cased); KeID(ParseKeID(s)) is the
// canonical form. Errors wrap ErrBadID.
func ParseKeID(s string) (relative []byte, mefFQDN string, err error) {
	hexPart, fqdn, ok := strings.Cut(s, "@")
	if !ok {
		return nil, "", fmt.Errorf("%w: KeID %q has no '@'", ErrBadID, s)
	}
	if len(hexPart) != 2*RelativeIDSize {
		return nil, "", fmt.Errorf("%w: KeID %q: relative part must be %d hex digits", ErrBadID, s, 2*RelativeIDSize)
	}
	relative, err = hex.DecodeString(hexPart)
	if err != nil {
		return nil, "", fmt.Errorf("%w: KeID %q: relative part is not hex", ErrBadID, s)
	}
	if err := checkFQDN(fqdn); err != nil {
		return nil, "", fmt.Errorf("KeID %q: %w", s, err)
	}
	return relative, strings.ToLower(fqdn), nil
}

// checkCanonicalKeID accepts exactly the strings KeID produces from valid
// input, because the KeID's bytes are the HSM context.
func checkCanonicalKeID(s string) error {
	rel, fqdn, err := ParseKeID(s)
	if err != nil {
		return err
	}
	if c := KeID(rel, fqdn); c != s {
		return fmt.Errorf("%w: KeID %q is not canonical (want %q)", ErrBadID, s, c)
	}
	return nil
}

// KpsaID returns relative "@" issuerFQDN (TS-0003 §10.5). The relative part
// is kept as given (only KmID is case-insensitive in TS-0003); the FQDN is
// lower-cased as in KeID. Errors wrap ErrBadID.
func KpsaID(relative, issuerFQDN string) (string, error) {
	if err := checkRelative(relative); err != nil {
		return "", fmt.Errorf("KpsaID: %w", err)
	}
	if err := checkFQDN(issuerFQDN); err != nil {
		return "", fmt.Errorf("KpsaID: %w", err)
	}
	return relative + "@" + strings.ToLower(issuerFQDN), nil
}

// KmID returns relative "@" mafFQDN in lower case (TS-0003 §10.6). KmID is
// case-insensitive, so it is normalised here: a registry that looks KmIDs up
// by string then finds one row whatever case the client used. Errors wrap
// ErrBadID.
func KmID(relative, mafFQDN string) (string, error) {
	if err := checkRelative(relative); err != nil {
		return "", fmt.Errorf("KmID: %w", err)
	}
	if err := checkFQDN(mafFQDN); err != nil {
		return "", fmt.Errorf("KmID: %w", err)
	}
	return strings.ToLower(relative + "@" + mafFQDN), nil
}

// checkRelative enforces the relative-part alphabet of TS-0003 §10.5/§10.6:
// letters, digits, '.', '_', '-'. "Letters" is read as ASCII letters: the
// IDs travel in URIs and TLS psk_identity, where anything else would need
// escaping.
func checkRelative(s string) error {
	if s == "" {
		return fmt.Errorf("%w: empty relative part", ErrBadID)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		default:
			return fmt.Errorf("%w: relative part %q: byte %q not allowed (letters, digits, '.', '_', '-')", ErrBadID, s, c)
		}
	}
	return nil
}

// checkFQDN is a deliberately strict DNS host name check (RFC 1035/1123
// letter-digit-hyphen labels): 2 or more labels of 1-63 characters, at most
// 253 characters, no trailing dot (one spelling per name), no underscore,
// and a top label that is not all digits (so an IPv4 address is refused).
// Internationalised names must come as A-labels ("xn--…").
func checkFQDN(s string) error {
	if s == "" {
		return fmt.Errorf("%w: empty FQDN", ErrBadID)
	}
	if len(s) > 253 {
		return fmt.Errorf("%w: FQDN %q longer than 253 characters", ErrBadID, s)
	}
	labels := strings.Split(s, ".")
	if len(labels) < 2 {
		return fmt.Errorf("%w: FQDN %q is not fully qualified (needs a dot)", ErrBadID, s)
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return fmt.Errorf("%w: FQDN %q: label %q must be 1-63 characters", ErrBadID, s, l)
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("%w: FQDN %q: label %q starts or ends with '-'", ErrBadID, s, l)
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return fmt.Errorf("%w: FQDN %q: byte %q not allowed", ErrBadID, s, c)
			}
		}
	}
	top := labels[len(labels)-1]
	if strings.Trim(top, "0123456789") == "" {
		return fmt.Errorf("%w: FQDN %q: top-level label is numeric", ErrBadID, s)
	}
	return nil
}

// CredentialType is the <type> of a Credential-ID (TS-0003 §10.4).
type CredentialType int

// Credential types (TS-0003 §10.4, as listed in docs/onem2m.md "Identifiers").
// 10-16 are symmetric keys, 30-34 public-key credentials. Types 10-15 line
// up with SUIDs 10-15; that parallel is what names 14 and 15.
const (
	CredentialKpmID         CredentialType = 10 // pre-provisioned key, authentication to the MEF
	CredentialKmID          CredentialType = 11 // master credential, authentication to the MAF
	CredentialKpsaID        CredentialType = 12 // KpsaID/KcID: security association (SAEF)
	CredentialESPrimKey     CredentialType = 13 // end-to-end security of primitives
	CredentialESDataEncrypt CredentialType = 14 // ESData key (encryption, by the SUID 14 parallel)
	CredentialESDataSign    CredentialType = 15 // ESData key (signature, by the SUID 15 parallel)
	CredentialESDataOther   CredentialType = 16 // third ESData key type; TS-0003 §10.4 does not say how it differs
	CredentialRawPublicKey  CredentialType = 30 // raw public key
	CredentialDeviceCert    CredentialType = 31 // device certificate
	CredentialCSEIDCert     CredentialType = 32 // CSE-ID certificate
	CredentialAEIDCert      CredentialType = 33 // AE-ID certificate
	CredentialNodeIDCert    CredentialType = 34 // Node-ID certificate
)

var credentialTypeNames = map[CredentialType]string{
	CredentialKpmID:         "KpmID",
	CredentialKmID:          "KmID",
	CredentialKpsaID:        "KpsaID",
	CredentialESPrimKey:     "ESPrim key",
	CredentialESDataEncrypt: "ESData encryption key",
	CredentialESDataSign:    "ESData signature key",
	CredentialESDataOther:   "ESData key (type 16)",
	CredentialRawPublicKey:  "raw public key",
	CredentialDeviceCert:    "device certificate",
	CredentialCSEIDCert:     "CSE-ID certificate",
	CredentialAEIDCert:      "AE-ID certificate",
	CredentialNodeIDCert:    "Node-ID certificate",
}

// Valid reports whether t is one of the TS-0003 §10.4 types above.
func (t CredentialType) Valid() bool {
	_, ok := credentialTypeNames[t]
	return ok
}

func (t CredentialType) String() string {
	if n, ok := credentialTypeNames[t]; ok {
		return n
	}
	return "CredentialType(" + strconv.Itoa(int(t)) + ")"
}

// CredentialID returns "<type>-<value>" (TS-0003 §10.4), e.g.
// "12-3f9a…@mef.sp.example". It does not validate; ParseCredentialID does.
func CredentialID(t CredentialType, value string) string {
	return strconv.Itoa(int(t)) + "-" + value
}

// ParseCredentialID splits a Credential-ID at its first '-' (values such as
// KpsaIDs may contain '-'). The type must be a known CredentialType in
// canonical decimal (no sign, no leading zero), so that CredentialID gives
// back s exactly and a registry keyed by Credential-ID has one key per
// credential; the value must be non-empty valid UTF-8. Errors wrap ErrBadID.
func ParseCredentialID(s string) (CredentialType, string, error) {
	typ, value, ok := strings.Cut(s, "-")
	if !ok {
		return 0, "", fmt.Errorf("%w: Credential-ID %q has no '-'", ErrBadID, s)
	}
	n, err := parseCanonicalUint(typ)
	if err != nil {
		return 0, "", fmt.Errorf("%w: Credential-ID %q: type %q is not a decimal number", ErrBadID, s, typ)
	}
	t := CredentialType(n)
	if !t.Valid() {
		return 0, "", fmt.Errorf("%w: Credential-ID %q: unknown type %d", ErrBadID, s, n)
	}
	if value == "" {
		return 0, "", fmt.Errorf("%w: Credential-ID %q: empty value", ErrBadID, s)
	}
	if !utf8.ValidString(value) {
		return 0, "", fmt.Errorf("%w: Credential-ID %q: value is not UTF-8", ErrBadID, s)
	}
	return t, value, nil
}

// parseCanonicalUint accepts 1-4 ASCII digits without a leading zero (or
// "0"): the only spellings strconv.Itoa produces for the small codes used
// here.
func parseCanonicalUint(s string) (int, error) {
	if s == "" || len(s) > 4 || (len(s) > 1 && s[0] == '0') {
		return 0, strconv.ErrSyntax
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, strconv.ErrSyntax
		}
	}
	return strconv.Atoi(s)
}

// CheckFQDN checks a Target-FQDN in the form Kuc hashes it (after NFKC,
// TS-0003 §10.3): a strict DNS host name, as checkFQDN describes. Errors
// wrap ErrBadID.
func CheckFQDN(s string) error {
	return checkFQDN(nfkc(s))
}
