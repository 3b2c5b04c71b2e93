package castatus

import (
	"context"
	"encoding/base64"
	"errors"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/credfactory/credfactory/apierr"
	"github.com/credfactory/credfactory/ca"
	"github.com/credfactory/credfactory/crlreason"
	"github.com/credfactory/credfactory/httpapi"
	"github.com/credfactory/credfactory/store"
	"github.com/valyala/fasthttp"
)

// Routes are the CRL and OCSP endpoints of this CA alone.
func (s *Service) Routes() []httpapi.Route { return Routes(nil, s) }

// Published is a CRL signed elsewhere and served as is: the root's, which
// the root key signs only at the ceremony (package pki).
type Published struct {
	Name       string
	DER        []byte
	ThisUpdate time.Time
	NextUpdate time.Time
}

// Routes are the CRL and OCSP endpoints of several CAs on the same paths:
// the CRL by its {issuer} name (Config.Name), OCSP by the request's issuer
// (the service whose CA the CertID names; unauthorized when none). They
// need no authentication: the answers are signed and public by design.
// Rate limits and the OCSP signer slots are the first service's settings
// for the limits, and each service's own for the signatures.
func Routes(static []Published, services ...*Service) []httpapi.Route {
	first := services[0]
	crl := ca.CRLPathPrefix + "{issuer}" + ca.CRLPathSuffix
	serveCRL := func(ctx *fasthttp.RequestCtx) error {
		name := httpapi.Param(ctx, "issuer")
		for _, s := range services {
			if s.cfg.Name == name {
				return s.serveCRL(ctx)
			}
		}
		for _, p := range static {
			if p.Name == name {
				return first.servePublished(ctx, p)
			}
		}
		var names []string
		for _, s := range services {
			names = append(names, ca.CRLPathPrefix+s.cfg.Name+ca.CRLPathSuffix)
		}
		for _, p := range static {
			names = append(names, ca.CRLPathPrefix+p.Name+ca.CRLPathSuffix)
		}
		return &apierr.Error{Status: http.StatusNotFound, Code: "unknown_issuer",
			Message: "no CRL for that issuer; this SP publishes " + strings.Join(names, ", ")}
	}
	m := &mux{services: services}
	return []httpapi.Route{
		{Method: http.MethodGet, Pattern: crl, Handler: first.limited(serveCRL, nil)},
		// HEAD answers like GET; fasthttp leaves the body out.
		{Method: http.MethodHead, Pattern: crl, Handler: first.limited(serveCRL, nil)},
		{Method: http.MethodGet, Pattern: ca.OCSPPath + "/{request:*}", Handler: first.limited(m.ocspGET, ca.OCSPTryLater)},
		{Method: http.MethodPost, Pattern: ca.OCSPPath, Handler: first.limited(m.ocspPOST, ca.OCSPTryLater), MaxBody: ca.MaxOCSPRequestSize},
	}
}

// mux sends each OCSP request to the service of the CA it names.
type mux struct{ services []*Service }

func (m *mux) pick(der []byte) *Service {
	if req, err := ca.ParseOCSPRequest(der); err == nil {
		for _, s := range m.services {
			if s.ca.IsOurs(req) {
				return s
			}
		}
	}
	return m.services[0] // answers malformed or unauthorized itself
}

func (m *mux) ocspGET(ctx *fasthttp.RequestCtx) error {
	raw := string(ctx.Request.URI().PathOriginal())
	_, enc, _ := strings.Cut(raw, ca.OCSPPath+"/")
	der, ok := decodeGETRequest(enc)
	if !ok {
		m.services[0].writeOCSP(ctx, ca.OCSPMalformedRequest, "malformed")
		return nil
	}
	m.pick(der).answer(ctx, der)
	return nil
}

func (m *mux) ocspPOST(ctx *fasthttp.RequestCtx) error {
	if ct := ctx.Request.Header.ContentType(); len(ct) > 0 && !isOCSPRequestType(string(ct)) {
		return &apierr.Error{Status: http.StatusUnsupportedMediaType, Code: "unsupported_media_type",
			Message: "OCSP requests are application/ocsp-request"}
	}
	m.pick(ctx.PostBody()).answer(ctx, ctx.PostBody())
	return nil
}

// limited applies limits.status_source before anything else runs, so a
// flood from one address costs a map lookup. Over the limit the answer is
// HTTP 429 with Retry-After, as on every other route: clients and caches
// that speak HTTP back off, none caches it, and the metric counts it. OCSP
// refusals carry the unsigned tryLater response as their body, for clients
// that read the body whatever the status.
func (s *Service) limited(h httpapi.Handler, body []byte) httpapi.Handler {
	if s.cfg.Limits == nil || s.cfg.Limits.StatusSource == nil {
		return h
	}
	return func(ctx *fasthttp.RequestCtx) error {
		err := s.cfg.Limits.CheckStatusSource(ctx)
		if err == nil {
			return h(ctx)
		}
		if body == nil {
			return err
		}
		s.cfg.Observer.ObserveOCSP("try_later")
		ctx.SetStatusCode(http.StatusTooManyRequests)
		if e := apierr.As(err); e.RetryAfter > 0 {
			ctx.Response.Header.Set("Retry-After", strconv.Itoa(e.RetryAfter))
		}
		ctx.SetContentType("application/ocsp-response")
		ctx.Response.Header.Set("Cache-Control", "no-cache")
		ctx.SetBody(body)
		return nil
	}
}

func (s *Service) serveCRL(ctx *fasthttp.RequestCtx) error {
	crl, stale, err := s.crl(ctx)
	if err != nil {
		return unavailable(err, "crl_unavailable", "the CRL cannot be generated now; retry")
	}
	now := s.cfg.Now()
	etag := `"` + crl.Number.Text(16) + `"`
	// Caches may keep the CRL until the next scheduled regeneration (never
	// past nextUpdate): after that a fresher one exists. Revocations in
	// between reach relying parties that cache at the next interval, or at
	// once through OCSP.
	expires := crl.ThisUpdate.Add(s.cfg.Interval)
	if crl.NextUpdate.Before(expires) {
		expires = crl.NextUpdate
	}
	maxAge := max(0, int(expires.Sub(now)/time.Second))
	if stale {
		// A revocation is not on it yet (its regeneration failed or is in
		// flight): no cache may keep it for an interval.
		maxAge = 0
	}
	h := &ctx.Response.Header
	h.Set("ETag", etag)
	h.Set("Last-Modified", crl.ThisUpdate.UTC().Format(http.TimeFormat))
	h.Set("Expires", now.Add(time.Duration(maxAge)*time.Second).UTC().Format(http.TimeFormat))
	h.Set("Cache-Control", "public, max-age="+strconv.Itoa(maxAge))
	if notModified(&ctx.Request.Header, etag, crl.ThisUpdate) {
		ctx.SetStatusCode(http.StatusNotModified)
		return nil
	}
	ctx.SetContentType("application/pkix-crl")
	ctx.SetStatusCode(http.StatusOK)
	ctx.SetBody(crl.DER)
	return nil
}

// servePublished serves a CRL signed elsewhere: cacheable for a day at
// most, never past its nextUpdate.
func (s *Service) servePublished(ctx *fasthttp.RequestCtx, p Published) error {
	now := s.cfg.Now()
	if !now.Before(p.NextUpdate) {
		return unavailable(nil, "crl_unavailable", "that CRL has expired; the ceremony must sign a new one")
	}
	maxAge := int(min(p.NextUpdate.Sub(now), 24*time.Hour) / time.Second)
	h := &ctx.Response.Header
	h.Set("Last-Modified", p.ThisUpdate.UTC().Format(http.TimeFormat))
	h.Set("Cache-Control", "public, max-age="+strconv.Itoa(maxAge))
	if notModified(&ctx.Request.Header, "", p.ThisUpdate) {
		ctx.SetStatusCode(http.StatusNotModified)
		return nil
	}
	ctx.SetContentType("application/pkix-crl")
	ctx.SetStatusCode(http.StatusOK)
	ctx.SetBody(p.DER)
	return nil
}

// notModified applies RFC 9110 §13.1: If-None-Match, when present, decides
// alone; otherwise If-Modified-Since compares with Last-Modified.
func notModified(h *fasthttp.RequestHeader, etag string, modified time.Time) bool {
	if inm := h.Peek("If-None-Match"); len(inm) > 0 {
		for _, tag := range strings.Split(string(inm), ",") {
			tag = strings.TrimPrefix(strings.TrimSpace(tag), "W/")
			if tag == "*" || tag == etag {
				return true
			}
		}
		return false
	}
	if ims := h.Peek("If-Modified-Since"); len(ims) > 0 {
		t, err := http.ParseTime(string(ims))
		return err == nil && !modified.Truncate(time.Second).After(t)
	}
	return false
}

func unavailable(err error, code, msg string) error {
	return &apierr.Error{Status: http.StatusServiceUnavailable, Code: code, Message: msg, RetryAfter: 1, Err: err}
}

// The OCSP routes (mux) serve RFC 6960 Appendix A.1: GET with the base64
// DER request, URL-encoded, as the last path segment (the raw path is
// decoded, because the router's cleaned path would fold the "//" that
// base64 may contain), and POST of application/ocsp-request.

func decodeGETRequest(enc string) ([]byte, bool) {
	unescaped, err := url.PathUnescape(enc)
	if err != nil || unescaped == "" || len(unescaped) > 2*ca.MaxOCSPRequestSize {
		return nil, false
	}
	// Standard base64 per RFC 6960; some clients send the URL-safe or the
	// unpadded alphabet, which cost nothing to accept.
	for _, e := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if der, err := e.DecodeString(unescaped); err == nil {
			return der, true
		}
	}
	return nil, false
}

// isOCSPRequestType compares media types as RFC 9110 §8.3.1 says: case
// insensitive, parameters aside.
func isOCSPRequestType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && mt == "application/ocsp-request"
}

// answer writes the OCSP response to one DER request. Every outcome is an
// OCSP response with HTTP 200, as RFC 6960 clients expect.
func (s *Service) answer(ctx *fasthttp.RequestCtx, der []byte) {
	resp, label := s.Respond(ctx, der)
	s.writeOCSP(ctx, resp, label)
}

func (s *Service) writeOCSP(ctx *fasthttp.RequestCtx, resp []byte, label string) {
	s.cfg.Observer.ObserveOCSP(label)
	ctx.SetStatusCode(http.StatusOK)
	ctx.SetContentType("application/ocsp-response")
	// Status is read per request so a revocation shows at once: no cache
	// may answer for us.
	ctx.Response.Header.Set("Cache-Control", "no-cache")
	ctx.SetBody(resp)
}

// Respond answers one DER OCSP request and names the outcome (the metric's
// label):
//   - malformed: unparsable, or for several certificates: malformedRequest;
//   - unauthorized: the CertID names another issuer (or a hash we do not
//     know), so we cannot answer authoritatively: unauthorized, as RFC 5019
//     §2.2.3 and RFC 6960 §2.3 prescribe and Boulder does, rather than a
//     signed "unknown" about a CA that is not ours;
//   - unknown: our issuer, but no certificate we issued has that serial
//     (never issued, or issued by a retired OBS sub-CA and forwarded): a
//     signed "unknown" (RFC 6960 §2.2);
//   - good / revoked: from the registry, read now;
//   - try_later: the registry or the HSM is unavailable;
//   - internal_error: anything else.
func (s *Service) Respond(ctx context.Context, der []byte) ([]byte, string) {
	req, err := ca.ParseOCSPRequest(der)
	if err != nil {
		return ca.OCSPMalformedRequest, "malformed"
	}
	if !s.ca.IsOurs(req) {
		return ca.OCSPUnauthorized, "unauthorized"
	}
	// We never issue a serial of more than 20 octets or one <= 0 (RFC 5280
	// §4.1.2.2), so no registry read can find it: answered at once,
	// unsigned unauthorized as Boulder does (the request is well formed,
	// so not malformedRequest; and we will not spend a signature on a
	// serial we can tell we never issued).
	if req.Serial.Sign() <= 0 || len(req.Serial.Bytes()) > 20 {
		return ca.OCSPUnauthorized, "unauthorized"
	}
	now := s.cfg.Now()
	// A response is no fresher than the CRL schedule promises, and a
	// client that caches it must ask again after one interval.
	a := ca.OCSPAnswer{Status: ca.OCSPGood, ThisUpdate: now, NextUpdate: now.Add(s.cfg.Interval)}
	cs, err := s.reg.CertificateStatusBySerial(ctx, req.Serial.Text(16))
	switch {
	case errors.Is(err, store.ErrNotFound):
		a.Status = ca.OCSPUnknown
	case err != nil:
		s.cfg.Logger.Warn("OCSP status read failed", "err", err.Error())
		return failure(err)
	case cs.IssuerKeyID != s.issuerKeyID:
		a.Status = ca.OCSPUnknown
	case cs.Status == store.StatusRevoked || cs.RevokedAt != nil:
		a.Status = ca.OCSPRevoked
		a.Reason = crlreason.Normalize(cs.Reason)
		if cs.RevokedAt != nil {
			a.RevokedAt = *cs.RevokedAt
		} else {
			a.RevokedAt = now
		}
	}
	if !s.acquireSigner(ctx) {
		return ca.OCSPTryLater, "try_later"
	}
	resp, err := s.ca.SignOCSP(ctx, req, a)
	<-s.signers
	if err != nil {
		s.cfg.Logger.Warn("OCSP response signing failed", "err", err.Error())
		return failure(err)
	}
	return resp, a.Status.String()
}

// acquireSigner takes one of the Signers OCSP signature slots, waiting at
// most SignerWait: a flood of OCSP requests then answers tryLater instead
// of queueing on the HSM pool the enrolments share.
func (s *Service) acquireSigner(ctx context.Context) bool {
	select {
	case s.signers <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(s.cfg.SignerWait)
	defer t.Stop()
	select {
	case s.signers <- struct{}{}:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

func failure(err error) ([]byte, string) {
	// apierr.Unavailable is how the HSM and the registry (and anything
	// else) say "try later".
	var u apierr.Unavailable
	if errors.Is(err, store.ErrContention) || errors.As(err, &u) || errors.Is(err, context.DeadlineExceeded) {
		return ca.OCSPTryLater, "try_later"
	}
	return ca.OCSPInternalError, "internal_error"
}
