package client

import (
	"errors"
	"fmt"
	"net/http"
	"testing"
)

func TestRetryable(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"unavailable", &Error{Status: http.StatusServiceUnavailable, Code: "registry_unavailable"}, true},
		{"rate limited", &Error{Status: http.StatusTooManyRequests, Code: "rate_limited"}, true},
		{"EST pending", &Error{Status: http.StatusAccepted}, true},
		{"registry contention", fmt.Errorf("enrol: %w", &Error{Status: http.StatusConflict, Code: "registry_contention"}), true},
		{"other conflict", &Error{Status: http.StatusConflict, Code: "tls_session_used"}, false},
		{"refused", &Error{Status: http.StatusForbidden, Code: "token_redeemed"}, false},
		{"exporter", fmt.Errorf("key: %w", ErrExporter), false},
		{"no answer", errors.New("connection reset"), true},
		{"nil", nil, false},
	} {
		if got := Retryable(tc.err); got != tc.want {
			t.Errorf("%s: Retryable = %v, want %v", tc.name, got, tc.want)
		}
	}
}
