// Package reqid carries a request's ID (the X-Request-ID the front end
// answers with) through a context.Context to the code that writes audit
// records, without that code knowing about HTTP. The front end's request
// context is fasthttp's RequestCtx, whose Value reads its user values, so
// it stores the ID under Key; anything else uses With. It also stores a
// standard context for the request (Attach), which code that derives
// contexts with a timeout starts from (Detached): fasthttp reuses the
// RequestCtx once the handler returns.
package reqid
