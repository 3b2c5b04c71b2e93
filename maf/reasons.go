package maf

import (
	"net/http"
	"sort"

	"github.com/credfactory/credfactory/apierr"
	"github.com/credfactory/credfactory/store"
)

// reasons are the RFC 5280 §5.3.1 CRLReason names a client may give. 7 is
// unassigned and removeFromCRL (8) takes an entry off a delta CRL: neither
// is a reason to revoke (store.ValidReason).
var reasons = map[string]int{
	"unspecified": store.ReasonUnspecified, "keyCompromise": store.ReasonKeyCompromise,
	"cACompromise": store.ReasonCACompromise, "affiliationChanged": store.ReasonAffiliationChanged,
	"superseded": store.ReasonSuperseded, "cessationOfOperation": store.ReasonCessationOfOperation,
	"certificateHold": store.ReasonCertificateHold, "privilegeWithdrawn": store.ReasonPrivilegeWithdrawn,
	"aACompromise": store.ReasonAACompromise,
}

// ReasonNames lists the accepted reason names in code order (for forms).
func ReasonNames() []string {
	out := make([]string, 0, len(reasons))
	for n := range reasons {
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return reasons[out[i]] < reasons[out[j]] })
	return out
}

// ReasonName is the RFC 5280 name of a reason code ("" for none).
func ReasonName(code int) string {
	for n, c := range reasons {
		if c == code {
			return n
		}
	}
	return ""
}

// ParseReason maps an RFC 5280 CRLReason name to its code; "" is
// unspecified (0). Anything else is a 400 bad_reason.
func ParseReason(name string) (int, error) {
	if name == "" {
		return store.ReasonUnspecified, nil
	}
	if code, ok := reasons[name]; ok {
		return code, nil
	}
	return 0, &apierr.Error{Status: http.StatusBadRequest, Code: "bad_reason",
		Message: "reason must be an RFC 5280 CRLReason name such as keyCompromise, affiliationChanged or cessationOfOperation"}
}
