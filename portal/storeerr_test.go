package portal

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/credfactory/credfactory/apierr"
	"github.com/credfactory/credfactory/store"
)

// TestStoreErrStatuses: 503 with Retry-After means the database does not
// answer; retries lost to concurrent transactions are 409 with
// Retry-After, never 503; other errors pass through.
func TestStoreErrStatuses(t *testing.T) {
	for _, tc := range []struct {
		err        error
		status     int
		code       string
		retryAfter int
	}{
		{fmt.Errorf("create enrolment: %w: dial tcp: refused", store.ErrUnavailable), http.StatusServiceUnavailable, "registry_unavailable", 1},
		{fmt.Errorf("create enrolment: %w: SQLSTATE 40001", store.ErrContention), http.StatusConflict, "registry_contention", 1},
	} {
		e := apierr.As(storeErr(tc.err))
		if e == nil || e.Status != tc.status || e.Code != tc.code || e.RetryAfter != tc.retryAfter || !errors.Is(e, tc.err) {
			t.Errorf("%v: %+v, want %d %s Retry-After %d", tc.err, e, tc.status, tc.code, tc.retryAfter)
		}
	}
	other := errors.New("boom")
	if err := storeErr(other); err != other {
		t.Errorf("another error became %v", err)
	}
}
