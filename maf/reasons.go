package maf

import (
	"net/http"

	"github.com/credfactory/credfactory/apierr"
	"github.com/credfactory/credfactory/crlreason"
)

// ParseReason maps an RFC 5280 CRLReason name to its code; "" is
// unspecified (0). Anything else, the unassigned 7 and the delta-only
// removeFromCRL included, is a 400 bad_reason.
func ParseReason(name string) (int, error) {
	if code, ok := crlreason.Parse(name); ok {
		return code, nil
	}
	return 0, &apierr.Error{Status: http.StatusBadRequest, Code: "bad_reason",
		Message: "reason must be an RFC 5280 CRLReason name such as keyCompromise, affiliationChanged or cessationOfOperation"}
}
