package reqid

import "context"

type detachedKey struct{}

// DetachedKey is the fasthttp user-value key under which the front end
// stores a standard context for the request (Attach).
var DetachedKey any = detachedKey{}

// Attach returns the standard context the front end stores under
// DetachedKey: it carries id and never ends. fasthttp's RequestCtx is a
// context.Context whose Done closes only at server shutdown, and which
// fasthttp reuses for the next request once the handler returns: a context
// derived from it with a timeout or cancel starts a goroutine that may read
// it after that (context.Cause -> Value), racing the reuse. Code that derives
// contexts takes Detached(ctx) instead; shutdown waits for in-flight
// requests, each bounded by its own timeouts, so nothing needed the
// shutdown signal.
func Attach(id string) context.Context {
	return With(context.Background(), id)
}

// Detached returns the standard context attached to ctx (a front-end
// request context, see Attach), or ctx itself.
func Detached(ctx context.Context) context.Context {
	if ctx == nil {
		return context.Background()
	}
	if d, ok := ctx.Value(DetachedKey).(context.Context); ok {
		return d
	}
	return ctx
}
