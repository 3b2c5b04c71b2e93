package store

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/credfactory/credfactory/apierr"
)

// TestUnavailableAnswers503: an outage of the registry reaches every HTTP
// layer (MEF, MAF, portal, OCSP) as a 503 with Retry-After through
// apierr.Unavailable, however the store wrapped it, and with no hand
// mapping in the handlers; the store's other verdicts do not.
func TestUnavailableAnswers503(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		want503  bool
		isUnavai bool
	}{
		{"bare", ErrUnavailable, true, true},
		{"connect", fmt.Errorf("%w: connect %s: %w", ErrUnavailable, "postgres://db", io.ErrUnexpectedEOF), true, true},
		{"wrapped twice", fmt.Errorf("redeem: %w", fmt.Errorf("%w: %w", ErrUnavailable, ErrClosed)), true, true},
		{"not found", fmt.Errorf("get: %w", ErrNotFound), false, false},
		{"conflict", ErrConflict, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := errors.Is(tt.err, ErrUnavailable); got != tt.isUnavai {
				t.Errorf("errors.Is(ErrUnavailable) = %v, want %v", got, tt.isUnavai)
			}
			e := apierr.As(tt.err)
			if !tt.want503 {
				if e.Status == http.StatusServiceUnavailable {
					t.Errorf("answered 503 %s for a verdict that is not an outage", e.Code)
				}
				return
			}
			if e.Status != http.StatusServiceUnavailable || e.Code != "registry_unavailable" || e.RetryAfter < 1 {
				t.Errorf("answer = %d %s Retry-After %d, want 503 registry_unavailable with Retry-After", e.Status, e.Code, e.RetryAfter)
			}
			if !errors.Is(e, ErrUnavailable) {
				t.Error("the answer lost its cause (the log needs it)")
			}
		})
	}
}
