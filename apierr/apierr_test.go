package apierr

import (
	"errors"
	"fmt"
	"net/http"
	"testing"
)

// outage is a unit-test stand-in for a dependency's "down for now" error
// (hsm.ErrUnavailable is the real one; hsm's tests check it end to end).
type outage struct{}

func (outage) Error() string                       { return "module not answering" }
func (outage) Unavailable() (code, message string) { return "thing_unavailable", "retry" }

func TestAs(t *testing.T) {
	mapped := New(http.StatusConflict, "taken", "already there")
	for _, c := range []struct {
		name       string
		err        error
		status     int
		code       string
		retryAfter int
	}{
		{"an Error stays itself", mapped, 409, "taken", 0},
		{"a wrapped Error too", fmt.Errorf("ctx: %w", mapped), 409, "taken", 0},
		{"an Error wins over the outage it wraps", &Error{Status: 503, Code: "own", Err: outage{}}, 503, "own", 0},
		{"an outage is a 503 with Retry-After", fmt.Errorf("sign: %w", outage{}), 503, "thing_unavailable", 1},
		{"anything else is a 500", errors.New("boom"), 500, "internal", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := As(c.err)
			if e.Status != c.status || e.Code != c.code || e.RetryAfter != c.retryAfter {
				t.Fatalf("As = %d %s retry %d, want %d %s retry %d", e.Status, e.Code, e.RetryAfter, c.status, c.code, c.retryAfter)
			}
			if c.retryAfter == 1 && e.Err != c.err {
				t.Fatal("the cause is lost for the log")
			}
		})
	}
}
