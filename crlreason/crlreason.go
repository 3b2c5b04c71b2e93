package crlreason

import "sort"

// RFC 5280 §5.3.1 CRLReason codes. 7 is not assigned.
const (
	Unspecified          = 0
	KeyCompromise        = 1
	CACompromise         = 2
	AffiliationChanged   = 3
	Superseded           = 4
	CessationOfOperation = 5
	CertificateHold      = 6
	// RemoveFromCRL takes an entry off a delta CRL: never why something is
	// revoked, and no CRL of ours (we publish no deltas) carries it.
	RemoveFromCRL      = 8
	PrivilegeWithdrawn = 9
	AACompromise       = 10
)

// names are the reasons a credential may be revoked with, by their
// RFC 5280 ASN.1 names.
var names = map[string]int{
	"unspecified": Unspecified, "keyCompromise": KeyCompromise, "cACompromise": CACompromise,
	"affiliationChanged": AffiliationChanged, "superseded": Superseded,
	"cessationOfOperation": CessationOfOperation, "certificateHold": CertificateHold,
	"privilegeWithdrawn": PrivilegeWithdrawn, "aACompromise": AACompromise,
}

// Revocable reports whether code is a reason a credential may be revoked
// with: 0-10 but the unassigned 7 and the delta-only RemoveFromCRL.
func Revocable(code int) bool {
	return code >= Unspecified && code <= AACompromise && code != 7 && code != RemoveFromCRL
}

// Parse maps a reason name to its code; "" is Unspecified. ok is false for
// a name that is not a revocable reason.
func Parse(name string) (code int, ok bool) {
	if name == "" {
		return Unspecified, true
	}
	code, ok = names[name]
	return code, ok
}

// Name is the RFC 5280 name of a revocable code, "" for any other.
func Name(code int) string {
	for n, c := range names {
		if c == code {
			return n
		}
	}
	return ""
}

// Names lists the revocable reasons' names in code order (for forms).
func Names() []string {
	out := make([]string, 0, len(names))
	for n := range names {
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return names[out[i]] < names[out[j]] })
	return out
}

// Normalize maps a recorded reason to what a CRL entry or an OCSP response
// may carry: nil, unassigned and delta-only codes become Unspecified, which
// both encodings express by omitting the reason (RFC 5280 §5.3.1:
// "unspecified ... SHOULD be absent").
func Normalize(r *int) int {
	if r == nil || !Revocable(*r) {
		return Unspecified
	}
	return *r
}
