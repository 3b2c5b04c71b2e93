package store

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/credfactory/credfactory/apierr"
	"github.com/jackc/pgx/v5/pgconn"
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

// TestStandbyIsAnOutage: a transaction that reached a standby (during a
// failover, before the new primary finished its promotion) is retried and
// then answered as the registry being unavailable (503), not a 500; other
// "feature not supported" errors are not.
func TestStandbyIsAnOutage(t *testing.T) {
	p := &postgres{}
	for _, tt := range []struct {
		name string
		err  error
		want bool
	}{
		{"serializable on a hot standby", &pgconn.PgError{Code: "0A000", Message: "cannot use serializable mode in a hot standby"}, true},
		{"read-only transaction", &pgconn.PgError{Code: "25006", Message: "cannot execute INSERT in a read-only transaction"}, true},
		{"wrapped", fmt.Errorf("pre-enrol devices: %w", &pgconn.PgError{Code: "25006"}), true},
		{"other feature not supported", &pgconn.PgError{Code: "0A000", Message: "cannot use LIMIT here"}, false},
		{"unique violation", &pgconn.PgError{Code: "23505"}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := connectionLost(tt.err); got != tt.want {
				t.Errorf("connectionLost = %v, want %v", got, tt.want)
			}
			got := p.classify(tt.err)
			if errors.Is(got, ErrUnavailable) != tt.want {
				t.Errorf("classify = %v, want unavailable %v", got, tt.want)
			}
			if tt.want && apierr.As(got).Status != http.StatusServiceUnavailable {
				t.Errorf("answered %d, want 503", apierr.As(got).Status)
			}
		})
	}
}
