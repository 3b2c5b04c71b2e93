package server

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/credfactory/credfactory/apierr"
	"github.com/credfactory/credfactory/httpapi"
	"github.com/credfactory/credfactory/metrics"
	"github.com/credfactory/credfactory/reqid"
	"github.com/fasthttp/router"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
	"github.com/valyala/fasthttp/pprofhandler"
)

// Handler serves one route. A returned error becomes the JSON error response
// (see apierr.As); a handler that writes its own response returns nil.
type Handler = httpapi.Handler

// Check is a readiness probe of one dependency (HSM, store).
type Check func(ctx context.Context) error

// Options configure a Server.
type Options struct {
	Listen string
	// StatusListen, when set, is a plain-HTTP address serving only the
	// routes given to RegisterStatus (the CA's CRL and OCSP): relying
	// parties fetch those over HTTP, the answers being signed, and cannot
	// be expected to trust our TLS chain before they have checked it.
	StatusListen string
	// OpsListen, when set, is a plain-HTTP address serving /metrics (and
	// /healthz and /readyz) for Prometheus and probes; /metrics is then
	// not on the TLS listener. Without it /metrics is served nowhere:
	// it tells login failures, tokens issued and rejection codes to
	// whoever asks, so it stays off the public port (loopback by default,
	// or a pod address behind a network policy).
	OpsListen string
	// Pprof adds Go's /debug/pprof to the operations listener (the caller
	// keeps it off unless that listener is loopback: profiles show
	// request contents, and taking them costs CPU).
	Pprof        bool
	TLS          *tls.Config
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	IdleTimeout  time.Duration
	MaxBodyBytes int
	MaxConns     int
	// StreamMinRate is the least average rate, in bytes per second, at
	// which an authenticated streamed upload must arrive (HandleStream);
	// 0 is DefaultStreamMinRate.
	StreamMinRate int64
	Logger        *slog.Logger
	Metrics       *metrics.Registry
	// Checks are run by /readyz; each gets CheckTimeout.
	Checks       map[string]Check
	CheckTimeout time.Duration
	// AccessLog logs one Info line per request. The route pattern stands
	// for the path, and nothing of the query, headers or body is logged:
	// tokens and claim codes travel there.
	AccessLog bool
}

// Server is the HTTPS front end.
type Server struct {
	opts   Options
	log    *slog.Logger
	router *router.Router
	srv    *fasthttp.Server
	// statusRouter and statusSrv serve StatusListen (nil without it).
	statusRouter *router.Router
	statusSrv    *fasthttp.Server
	// opsSrv serves OpsListen (nil without it).
	opsSrv *fasthttp.Server

	mu       sync.Mutex
	ln       net.Listener
	statusLn net.Listener
	opsLn    net.Listener

	readyMu sync.Mutex
	ready   map[string]string
	readyAt time.Time
}

// New builds a server with the ops routes registered.
func New(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.New()
	}
	if opts.CheckTimeout == 0 {
		opts.CheckTimeout = 2 * time.Second
	}
	if opts.StreamMinRate == 0 {
		opts.StreamMinRate = DefaultStreamMinRate
	}
	s := &Server{opts: opts, log: opts.Logger}
	s.router = s.newRouter()
	s.srv = s.newFastHTTP(s.router)
	if opts.StatusListen != "" {
		s.statusRouter = s.newRouter()
		s.statusSrv = s.newFastHTTP(s.statusRouter)
	}
	s.Handle(fasthttp.MethodGet, "/healthz", s.healthz)
	s.Handle(fasthttp.MethodGet, "/readyz", s.readyz)
	if opts.OpsListen != "" {
		metricsHandler := fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(opts.Metrics.Registry, promhttp.HandlerOpts{}))
		ops := s.newRouter()
		ops.Handle(fasthttp.MethodGet, "/metrics", s.wrap("/metrics", func(ctx *fasthttp.RequestCtx) error {
			metricsHandler(ctx)
			return nil
		}))
		ops.Handle(fasthttp.MethodGet, "/healthz", s.wrap("/healthz", s.healthz))
		ops.Handle(fasthttp.MethodGet, "/readyz", s.wrap("/readyz", s.readyz))
		if opts.Pprof {
			ops.Handle(fasthttp.MethodGet, "/debug/pprof/{profile:*}", s.wrap("/debug/pprof", func(ctx *fasthttp.RequestCtx) error {
				pprofhandler.PprofHandler(ctx)
				return nil
			}))
		}
		s.opsSrv = s.newFastHTTP(ops)
	}
	return s
}

func (s *Server) newRouter() *router.Router {
	r := router.New()
	r.NotFound = func(ctx *fasthttp.RequestCtx) { s.fail(ctx, "not_found", apierr.NotFound) }
	r.MethodNotAllowed = func(ctx *fasthttp.RequestCtx) {
		s.fail(ctx, "method_not_allowed", apierr.MethodNotAllowed)
	}
	r.HandleOPTIONS = false
	r.PanicHandler = func(ctx *fasthttp.RequestCtx, v any) {
		s.log.Error("handler panicked", "path", string(ctx.Path()), "panic", fmt.Sprint(v))
		s.fail(ctx, "panic", apierr.As(fmt.Errorf("panic: %v", v)))
	}
	return r
}

func (s *Server) newFastHTTP(r *router.Router) *fasthttp.Server {
	opts := s.opts
	return &fasthttp.Server{
		Handler:            hsts(r.Handler),
		ErrorHandler:       s.transportError,
		Name:               "credfactory",
		ReadTimeout:        opts.ReadTimeout,
		WriteTimeout:       opts.WriteTimeout,
		IdleTimeout:        opts.IdleTimeout,
		MaxRequestBodySize: opts.MaxBodyBytes,
		// Bodies stream: routes read theirs through a limit (Handle) or
		// consume it as it arrives (HandleStream: bulk uploads of 100,000
		// devices are larger than any sensible in-memory limit).
		StreamRequestBody:            true,
		Concurrency:                  opts.MaxConns,
		CloseOnShutdown:              true,
		NoDefaultContentType:         true,
		DisablePreParseMultipartForm: true,
		Logger:                       fasthttpLogger{s.log},
	}
}

// Handle registers h for method and pattern (fasthttp/router syntax, e.g.
// "/api/v1/devices/{deviceId}"). The body is read before h runs, up to
// Options.MaxBodyBytes (413 beyond). The pattern, not the path, labels
// metrics, so their cardinality stays bounded.
func (s *Server) Handle(method, pattern string, h Handler) { s.handleMax(method, pattern, 0, h) }

// handleMax is Handle with a route's own body limit (httpapi.Route.MaxBody)
// when it is positive and below Options.MaxBodyBytes.
func (s *Server) handleMax(method, pattern string, maxBody int64, h Handler) {
	s.handle(method, pattern, s.readingBody(maxBody, h))
}

func (s *Server) readingBody(maxBody int64, h Handler) Handler {
	limit := int64(s.opts.MaxBodyBytes)
	if maxBody > 0 && (limit <= 0 || maxBody < limit) {
		limit = maxBody
	}
	return func(ctx *fasthttp.RequestCtx) error {
		if err := s.readBody(ctx, limit); err != nil {
			return err
		}
		return h(ctx)
	}
}

// Register registers components' routes (streamed or not).
func (s *Server) Register(routes ...httpapi.Route) {
	for _, r := range routes {
		if r.Stream {
			s.HandleStream(r.Method, r.Pattern, r.MaxBody, r.Handler)
		} else {
			s.handleMax(r.Method, r.Pattern, r.MaxBody, r.Handler)
		}
	}
}

// RegisterStatus registers routes on the TLS listener and, when
// Options.StatusListen is set, on the plain-HTTP status listener too. Only
// routes whose answers are public and signed belong here.
func (s *Server) RegisterStatus(routes ...httpapi.Route) {
	for _, r := range routes {
		if r.Stream {
			panic("server: status routes are not streamed")
		}
		s.handleMax(r.Method, r.Pattern, r.MaxBody, r.Handler)
		if s.statusRouter != nil {
			s.statusRouter.Handle(r.Method, r.Pattern, s.wrap(r.Pattern, s.readingBody(r.MaxBody, r.Handler)))
		}
	}
}

// HandleStream registers a handler that reads the request body itself from
// ctx.RequestBodyStream(), as it arrives, up to maxBody bytes (413 beyond,
// for a declared length; a reader past the limit gets an error).
//
// Until the handler calls httpapi.BeginStream (after authenticating the
// caller), the body is read under Options.ReadTimeout like any request's.
// From then on each read waits at most ReadTimeout, the body as a whole at
// most StreamReadTimeout, and the client must keep StreamMinRate on average
// over the time the server spent waiting for it (time the server spends
// processing rows does not count against the client). A handler that returns
// without reading the body to its end closes the connection: the rest is not
// drained from a client nobody vouched for.
func (s *Server) HandleStream(method, pattern string, maxBody int64, h Handler) {
	s.handle(method, pattern, func(ctx *fasthttp.RequestCtx) error {
		if n := ctx.Request.Header.ContentLength(); n > 0 && int64(n) > maxBody {
			ctx.SetConnectionClose()
			return apierr.BodyTooLarge
		}
		stream := ctx.RequestBodyStream()
		if stream == nil {
			return h(ctx)
		}
		body := &limitedBody{r: io.LimitReader(stream, maxBody+1), max: maxBody, ctx: ctx,
			idle: s.opts.ReadTimeout, minRate: s.opts.StreamMinRate}
		ctx.Request.SetBodyStream(body, -1)
		httpapi.SetStreamStart(ctx, body.start)
		err := h(ctx)
		// A handler that streams its answer (SetBodyStreamWriter) reads the
		// body after it returns, from fasthttp's writer goroutine: eof is
		// read here while that goroutine may set it, and such answers
		// close the connection unless the body was already consumed.
		if !body.eof.Load() {
			ctx.SetConnectionClose()
		}
		return err
	})
}

// StreamReadTimeout bounds reading one streamed request body.
const StreamReadTimeout = 15 * time.Minute

// DefaultStreamMinRate is Options.StreamMinRate's default, in bytes per
// second: a factory line uploads at LAN speed, a trickle is an attack.
const DefaultStreamMinRate = 16 << 10

// ErrBodyTooLarge is what a streaming handler's body reader returns past the
// route's limit; apierr maps it to 413.
var ErrBodyTooLarge = apierr.BodyTooLarge

// ErrStreamTooSlow is what a streaming handler's body reader returns when
// the client fell below the minimum data rate or went idle.
var ErrStreamTooSlow = apierr.New(http.StatusRequestTimeout, "request_timeout", "the upload arrived too slowly")

type limitedBody struct {
	r   io.Reader
	n   int64
	max int64
	eof atomic.Bool

	ctx     *fasthttp.RequestCtx
	idle    time.Duration
	minRate int64
	// streaming is set by start; waited is the time spent blocked in
	// reads since then, and n0 the bytes read before it.
	streaming    bool
	began, endBy time.Time
	waited       time.Duration
	n0           int64
}

func (l *limitedBody) start() {
	if l.streaming {
		return
	}
	l.streaming, l.began, l.n0 = true, time.Now(), l.n
	l.endBy = l.began.Add(StreamReadTimeout)
}

// deadline is the next read's: the client has a grace of one idle period
// plus the time its bytes so far paid for at the minimum rate, less the
// time it already kept the server waiting; never more than one idle period
// ahead, never past the stream's end.
func (l *limitedBody) deadline(now time.Time) (time.Time, bool) {
	credit := l.idle - l.waited
	if l.minRate > 0 {
		credit += time.Duration(float64(l.n-l.n0) / float64(l.minRate) * float64(time.Second))
	}
	if credit > l.idle {
		credit = l.idle
	}
	d := now.Add(credit)
	if d.After(l.endBy) {
		d = l.endBy
	}
	return d, credit > 0 && now.Before(l.endBy)
}

func (l *limitedBody) Read(p []byte) (int, error) {
	if !l.streaming || l.idle <= 0 || l.ctx == nil {
		return l.read(p)
	}
	now := time.Now()
	d, ok := l.deadline(now)
	if !ok {
		return 0, ErrStreamTooSlow
	}
	_ = l.ctx.SetReadDeadline(d)
	n, err := l.read(p)
	l.waited += time.Since(now)
	var netErr net.Error
	if err != nil && errors.As(err, &netErr) && netErr.Timeout() {
		return n, ErrStreamTooSlow
	}
	return n, err
}

func (l *limitedBody) read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	l.n += int64(n)
	if l.n > l.max {
		return n, ErrBodyTooLarge
	}
	if errors.Is(err, io.EOF) {
		l.eof.Store(true)
	}
	return n, err
}

func (s *Server) readBody(ctx *fasthttp.RequestCtx, limit int64) error {
	n := ctx.Request.Header.ContentLength()
	if n > 0 && int64(n) > limit {
		return apierr.BodyTooLarge
	}
	stream := ctx.RequestBodyStream()
	if stream == nil || n == 0 {
		return nil // GETs and empty bodies: nothing to read or allocate
	}
	if n > 0 {
		// The length is known and within the limit: one buffer of that
		// size, handed to the request without a copy (an EST or JSON
		// enrolment body would otherwise grow through ReadAll's doublings
		// and then be copied by SetBody).
		body := make([]byte, n)
		if _, err := io.ReadFull(stream, body); err != nil {
			return apierr.BadRequest
		}
		ctx.Request.SetBodyRaw(body)
		return nil
	}
	// Chunked: read up to the limit, one byte more to tell "too large".
	body, err := io.ReadAll(io.LimitReader(stream, limit+1))
	if err != nil {
		return apierr.BadRequest
	}
	if int64(len(body)) > limit {
		return apierr.BodyTooLarge
	}
	ctx.Request.SetBody(body)
	return nil
}

func (s *Server) handle(method, pattern string, h Handler) {
	s.router.Handle(method, pattern, s.wrap(pattern, h))
}

// wrap adds request IDs, error answers, logs and metrics to h.
func (s *Server) wrap(pattern string, h Handler) fasthttp.RequestHandler {
	requests := s.opts.Metrics.HTTPRequests
	duration := s.opts.Metrics.HTTPDuration.WithLabelValues(pattern)
	return func(ctx *fasthttp.RequestCtx) {
		start := time.Now()
		id := requestID(ctx)
		// Audit records of what the handler signs name the request.
		ctx.SetUserValue(reqid.Key, id)
		// Contexts derived below start from this, never from ctx itself,
		// which fasthttp recycles after the handler (reqid.Attach).
		ctx.SetUserValue(reqid.DetachedKey, reqid.Attach(id))
		if err := h(ctx); err != nil {
			e := apierr.As(err)
			if e.Status >= 500 {
				s.log.Error("request failed", "request_id", id, "route", pattern, "status", e.Status, "err", e.Error())
			} else {
				// Codes are a fixed vocabulary: a bounded label.
				s.opts.Metrics.HTTPRejected.WithLabelValues(e.Code).Inc()
				s.log.Debug("request refused", "request_id", id, "route", pattern, "status", e.Status, "code", e.Code)
			}
			write(ctx, e)
		}
		elapsed := time.Since(start)
		duration.Observe(elapsed.Seconds())
		status := ctx.Response.StatusCode()
		requests.WithLabelValues(pattern, strconv.Itoa(status)).Inc()
		if s.opts.AccessLog {
			s.log.LogAttrs(context.Background(), slog.LevelInfo, "request",
				slog.String("request_id", id), slog.String("method", string(ctx.Method())), slog.String("route", pattern),
				slog.Int("status", status), slog.Duration("duration", elapsed),
				slog.String("peer", ctx.RemoteIP().String()))
		}
	}
}

// Listen binds the listening socket, so that the caller learns the address
// (":0" in tests) before serving.
func (s *Server) Listen() error {
	ln, err := net.Listen("tcp", s.opts.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.opts.Listen, err)
	}
	var statusLn, opsLn net.Listener
	if s.statusSrv != nil {
		if statusLn, err = net.Listen("tcp", s.opts.StatusListen); err != nil {
			ln.Close()
			return fmt.Errorf("listen on %s (status): %w", s.opts.StatusListen, err)
		}
	}
	if s.opsSrv != nil {
		if opsLn, err = net.Listen("tcp", s.opts.OpsListen); err != nil {
			ln.Close()
			if statusLn != nil {
				statusLn.Close()
			}
			return fmt.Errorf("listen on %s (operations): %w", s.opts.OpsListen, err)
		}
	}
	s.mu.Lock()
	s.ln, s.statusLn, s.opsLn = ln, statusLn, opsLn
	s.mu.Unlock()
	return nil
}

// OpsAddr is the bound plain-HTTP operations address, after Listen; nil
// without Options.OpsListen.
func (s *Server) OpsAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.opsLn == nil {
		return nil
	}
	return s.opsLn.Addr()
}

// StatusAddr is the bound plain-HTTP status address, after Listen; nil
// without Options.StatusListen.
func (s *Server) StatusAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.statusLn == nil {
		return nil
	}
	return s.statusLn.Addr()
}

// Addr is the bound address, after Listen.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Serve serves HTTPS until Shutdown. It calls Listen if the caller did not.
func (s *Server) Serve() error {
	if s.Addr() == nil {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	if s.opts.TLS == nil {
		return errors.New("server: no TLS configuration")
	}
	s.mu.Lock()
	ln := tls.NewListener(s.ln, s.opts.TLS)
	statusLn, opsLn := s.statusLn, s.opsLn
	s.mu.Unlock()
	type listener struct {
		srv  *fasthttp.Server
		ln   net.Listener
		what string
	}
	all := []listener{{s.srv, ln, "serve"}}
	if statusLn != nil {
		all = append(all, listener{s.statusSrv, statusLn, "serve status listener"})
	}
	if opsLn != nil {
		all = append(all, listener{s.opsSrv, opsLn, "serve operations listener"})
	}
	if len(all) == 1 {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, net.ErrClosed) {
			return fmt.Errorf("serve: %w", err)
		}
		return nil
	}
	// All run until one stops. A listener that fails takes the others down
	// at once and is reported: a dead status or operations listener must
	// not go unnoticed until the TLS server happens to stop.
	type result struct {
		i   int
		err error
	}
	done := make(chan result, len(all))
	for i, l := range all {
		go func() {
			err := l.srv.Serve(l.ln)
			if err != nil && !errors.Is(err, net.ErrClosed) {
				err = fmt.Errorf("%s: %w", l.what, err)
			} else {
				err = nil
			}
			done <- result{i, err}
		}()
	}
	first := <-done
	if first.err != nil {
		// Close the others' listeners as well as shutting them down:
		// fasthttp's Shutdown only closes listeners its Serve has
		// registered, and that Serve may not have started yet (then it
		// would serve forever).
		for i, l := range all {
			if i != first.i {
				_ = l.ln.Close()
				_ = l.srv.Shutdown()
			}
		}
	}
	errs := []error{first.err}
	for range len(all) - 1 {
		errs = append(errs, (<-done).err)
	}
	return errors.Join(errs...)
}

// Shutdown stops accepting connections and waits, at most until ctx ends,
// for in-flight requests to finish; idle keep-alive connections are closed.
func (s *Server) Shutdown(ctx context.Context) error {
	// Both, whatever the first says: an error stopping one must not leave
	// the other serving.
	var errs []error
	if s.statusSrv != nil {
		if err := s.statusSrv.ShutdownWithContext(ctx); err != nil {
			errs = append(errs, fmt.Errorf("shutdown status listener: %w", err))
		}
	}
	if s.opsSrv != nil {
		if err := s.opsSrv.ShutdownWithContext(ctx); err != nil {
			errs = append(errs, fmt.Errorf("shutdown operations listener: %w", err))
		}
	}
	if err := s.srv.ShutdownWithContext(ctx); err != nil {
		errs = append(errs, fmt.Errorf("shutdown: %w", err))
	}
	return errors.Join(errs...)
}

func (s *Server) healthz(ctx *fasthttp.RequestCtx) error {
	writeJSON(ctx, fasthttp.StatusOK, map[string]string{"status": "ok"})
	return nil
}

// readyz answers from checks run at most once a second, however many probes
// arrive: a probe flood must not take HSM sessions from issuance. Failures
// are logged in full and reported as "unavailable" only: the endpoint is
// unauthenticated, and error text names module paths and tokens.
func (s *Server) readyz(ctx *fasthttp.RequestCtx) error {
	checks := s.readiness()
	status, word := fasthttp.StatusOK, "ready"
	for _, v := range checks {
		if v != "ok" {
			status, word = fasthttp.StatusServiceUnavailable, "unready"
		}
	}
	writeJSON(ctx, status, map[string]any{"status": word, "checks": checks})
	return nil
}

const readinessTTL = time.Second

func (s *Server) readiness() map[string]string {
	s.readyMu.Lock()
	defer s.readyMu.Unlock()
	if s.ready != nil && time.Since(s.readyAt) < readinessTTL {
		return s.ready
	}
	type result struct {
		name string
		err  error
	}
	results := make(chan result, len(s.opts.Checks))
	for name, check := range s.opts.Checks {
		go func() {
			cctx, cancel := context.WithTimeout(context.Background(), s.opts.CheckTimeout)
			defer cancel()
			results <- result{name, check(cctx)}
		}()
	}
	checks := map[string]string{}
	for range s.opts.Checks {
		r := <-results
		checks[r.name] = "ok"
		up := 1.0
		if r.err != nil {
			up = 0
			checks[r.name] = "unavailable"
			s.log.Warn("readiness check failed", "check", r.name, "err", r.err.Error())
		}
		s.opts.Metrics.Ready.WithLabelValues(r.name).Set(up)
	}
	s.ready, s.readyAt = checks, time.Now()
	return checks
}

// transportError answers failures fasthttp detects before any handler: an
// oversized body, a malformed request, a read timeout.
func (s *Server) transportError(ctx *fasthttp.RequestCtx, err error) {
	var e *apierr.Error
	reason := "bad_request"
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		e, reason = apierr.BodyTooLarge, "body_too_large"
	default:
		var netErr net.Error
		if errors.As(err, &netErr) && netErr.Timeout() {
			e, reason = apierr.New(fasthttp.StatusRequestTimeout, "request_timeout", "the request was not read in time"), "timeout"
		} else {
			e = apierr.BadRequest
		}
	}
	s.fail(ctx, reason, e)
}

func (s *Server) fail(ctx *fasthttp.RequestCtx, reason string, e *apierr.Error) {
	s.opts.Metrics.HTTPRejected.WithLabelValues(reason).Inc()
	write(ctx, e)
}

func write(ctx *fasthttp.RequestCtx, e *apierr.Error) {
	if e.RetryAfter > 0 {
		ctx.Response.Header.Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	ctx.SetStatusCode(e.Status)
	ctx.SetContentType("application/json")
	ctx.SetBody(e.JSON())
}

func writeJSON(ctx *fasthttp.RequestCtx, status int, v any) {
	if err := httpapi.JSON(ctx, status, v); err != nil {
		write(ctx, apierr.As(err))
	}
}

// HSTS is the Strict-Transport-Security value on every answer over TLS
// (RFC 6797): browsers that reached the portal once go on using HTTPS for a
// year, so a network attacker cannot strip TLS from a later visit. Not
// includeSubDomains: other hosts of the SP's domain are not ours to bind.
const HSTS = "max-age=31536000"

// hsts adds HSTS to answers over TLS only (RFC 6797 §7.2: never over plain
// HTTP, where the status listener serves CRLs and OCSP).
func hsts(h fasthttp.RequestHandler) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		if ctx.IsTLS() {
			ctx.Response.Header.Set("Strict-Transport-Security", HSTS)
		}
		h(ctx)
	}
}

type fasthttpLogger struct{ l *slog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) {
	f.l.Warn(fmt.Sprintf(format, args...), "component", "fasthttp")
}

// TLSConfig is the front end's TLS policy around the server's identity
// (getCert, so a renewed certificate is served without a restart):
// TLS 1.3, or TLS 1.2 with ECDHE-ECDSA and AES-GCM only (TS-0003 §10.2 names
// ECDHE_ECDSA with AES-128; Go's defaults would also offer CBC-SHA1 and
// ChaCha20). Client certificates are requested, never required, and
// verified per route (package clientauth): RSPF devices may have none.
func TLSConfig(getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{
		GetCertificate: getCert,
		MinVersion:     tls.VersionTLS12,
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		},
		ClientAuth: tls.RequestClientCert,
	}
}

// requestID names a request in logs and in the X-Request-ID answer header:
// the client's own ID when it sent a sane one (so a factory line can follow
// its requests), else a fresh random one.
func requestID(ctx *fasthttp.RequestCtx) string {
	id := string(ctx.Request.Header.Peek("X-Request-ID"))
	if len(id) == 0 || len(id) > 64 || strings.IndexFunc(id, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
	}) >= 0 {
		var b [12]byte
		rand.Read(b[:])
		id = hex.EncodeToString(b[:])
	}
	ctx.Response.Header.Set("X-Request-ID", id)
	return id
}
