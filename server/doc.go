// Package server is credfactory's HTTPS front end on fasthttp: one TLS
// listener whose key stays in the HSM, routing, request limits (body size,
// read/write/idle timeouts, connection cap), the JSON error shape of package
// apierr for every failure including ones fasthttp detects before a handler
// runs, HSTS on every TLS answer, streamed bodies read only after the caller
// is authenticated and then at a minimum rate, the ops endpoints (/healthz
// and /readyz on every listener; /metrics and, if asked, /debug/pprof only
// on the plain-HTTP operations listener), request metrics, and a graceful
// shutdown that lets in-flight requests finish.
//
// Components (MEF, MAF, portal) register handlers; they never import this
// package, so a handler is a plain func(*fasthttp.RequestCtx) error.
package server
