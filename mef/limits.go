package mef

import (
	"github.com/credfactory/credfactory/httpapi"
	"github.com/valyala/fasthttp"
)

// Rate limits (README "Rate limits"; package ratelimit). The enrolment routes
// are limited per source address before anything else runs, so a flood
// from one address costs a map lookup, not a CSR parse, a registry read or
// an HSM signature. The tenant's limit applies once the token has been
// read (precheck), the OBF's per forwarded batch (forward).

// perSource wraps an enrolment route in the enrol_source limit; answer
// writes the refusal in the route's own style (EST: text).
func (m *MEF) perSource(h httpapi.Handler, answer func(*fasthttp.RequestCtx, error) error) httpapi.Handler {
	if m.cfg.Limits.EnrolSource == nil {
		return h
	}
	return func(ctx *fasthttp.RequestCtx) error {
		if err := m.cfg.Limits.CheckEnrolSource(ctx); err != nil {
			return answer(ctx, err)
		}
		return h(ctx)
	}
}

func jsonAnswer(_ *fasthttp.RequestCtx, err error) error { return err }
