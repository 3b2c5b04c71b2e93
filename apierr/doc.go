// Package apierr is the error every HTTP handler returns and the one JSON
// shape clients see: {"error":{"code":"...","message":"..."}} with the
// matching status (api/openapi.yaml, components Error). Codes are stable
// snake_case words a client can switch on; messages are for people and never
// carry secrets.
package apierr
