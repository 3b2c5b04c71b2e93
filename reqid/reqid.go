package reqid

import "context"

type key struct{}

// Key is the context key (and fasthttp user-value key) of the request ID.
var Key any = key{}

// With returns ctx carrying id.
func With(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, Key, id)
}

// From returns the request ID ctx carries, or "".
func From(ctx context.Context) string {
	if ctx == nil {
		return ""
	}
	id, _ := ctx.Value(Key).(string)
	return id
}
