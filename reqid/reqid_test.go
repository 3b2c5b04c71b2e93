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
		{"shadowed by a later value", context.WithValue(With(context.Background(), "abc"), struct{}{}, 1), "abc"},
	} {
		if got := From(tc.ctx); got != tc.want {
			t.Errorf("%s: From = %q, want %q", tc.name, got, tc.want)
		}
	}
}
