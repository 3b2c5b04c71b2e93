package reqid

import (
	"context"
	"testing"
)

func TestFrom(t *testing.T) {
	for _, tc := range []struct {
		name string
		ctx  context.Context
		want string
	}{
		{"set", With(context.Background(), "abc"), "abc"},
		{"unset", context.Background(), ""},
		{"nil", nil, ""},
		{"shadowed by a later value", context.WithValue(With(context.Background(), "abc"), otherKey{}, 1), "abc"},
	} {
		if got := From(tc.ctx); got != tc.want {
			t.Errorf("%s: From = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// otherKey is another package's context key.
type otherKey struct{}

// valueCtx stands in for fasthttp's RequestCtx: a context whose values are
// its user values.
type valueCtx struct {
	context.Context
	vals map[any]any
}

func (v valueCtx) Value(k any) any { return v.vals[k] }

func TestDetached(t *testing.T) {
	attached := Attach("req-1")
	front := valueCtx{Context: context.Background(), vals: map[any]any{Key: "req-1", DetachedKey: attached}}
	plain := With(context.Background(), "req-2")
	for _, tc := range []struct {
		name string
		ctx  context.Context
		want context.Context
	}{
		{"front-end request", front, attached},
		{"any other context is itself", plain, plain},
		{"nil", nil, context.Background()},
	} {
		if got := Detached(tc.ctx); got != tc.want {
			t.Errorf("%s: Detached = %v, want %v", tc.name, got, tc.want)
		}
	}
	if From(Detached(front)) != "req-1" || Detached(front).Done() != nil {
		t.Fatal("the attached context must carry the request ID and never end")
	}
}
