package mef

import (
	"errors"
	"fmt"
	"testing"

	"github.com/credfactory/credfactory/apierr"
	"github.com/credfactory/credfactory/forwardapi"
	"github.com/credfactory/credfactory/hsm"
	"github.com/credfactory/credfactory/store"
)

// TestForwardCodesOfRealFailures ties the server's answers to the wire
// contract the OBS decides on: each failure the forward path can meet is
// answered with the code forwardapi names for it, and forwardapi.Transient
// says "send again" exactly for those the SP could not decide (its
// registry or HSM down, an internal error). A code renamed on the server
// side fails here, not silently in an OBS that then refuses what it should
// retry, or retries for ever what was refused.
func TestForwardCodesOfRealFailures(t *testing.T) {
	for _, c := range []struct {
		name      string
		err       error
		code      string
		transient bool
	}{
		{"registry down", fmt.Errorf("redeem: %w", store.ErrUnavailable), forwardapi.CodeRegistryUnavailable, true},
		{"HSM down", fmt.Errorf("seal key: %w", hsm.ErrUnavailable), forwardapi.CodeHSMUnavailable, true},
		{"HSM busy", fmt.Errorf("sign: %w", hsm.ErrPoolTimeout), forwardapi.CodeHSMUnavailable, true},
		{"anything else", errors.New("boom"), forwardapi.CodeInternal, true},
		{"unknown token", store.ErrTokenUnknown, forwardapi.CodeTokenUnknown, false},
		{"used token", store.ErrTokenRedeemed, forwardapi.CodeTokenRedeemed, false},
		{"expired token", store.ErrTokenExpired, forwardapi.CodeTokenExpired, false},
		{"cancelled token", store.ErrTokenCancelled, forwardapi.CodeTokenCancelled, false},
		{"another OBF's token", fmt.Errorf("%w: the token was issued to another OBF", store.ErrTokenMismatch), forwardapi.CodeTokenMismatch, false},
		{"credential exists", store.ErrConflict, forwardapi.CodeCredentialExists, false},
		{"sub-CA certificate", errSubCARetired, forwardapi.CodeSubCARetired, false},
		{"OBF-chosen key ID", errKeyIDAssigned, forwardapi.CodeKeyIDAssignedBySP, false},
		{"CSR naming another device", errSANMismatch, forwardapi.CodeCSRSANMismatch, false},
		{"CSR asking for a CA", errCSRExtensions, forwardapi.CodeCSRExtension, false},
	} {
		e := apierr.As(tokenErr(c.err))
		if e.Code != c.code || forwardapi.Transient(e.Code) != c.transient {
			t.Errorf("%s: code %q (transient %v), want %q (transient %v)", c.name, e.Code, forwardapi.Transient(e.Code), c.code, c.transient)
		}
	}
}
