package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/credfactory/credfactory/apierr"
	"github.com/valyala/fasthttp"
)

// Handler serves one route; a returned error becomes the JSON error answer.
type Handler = func(ctx *fasthttp.RequestCtx) error

// Route is one endpoint a component serves. A Stream route reads its body
// itself from ctx.RequestBodyStream(), up to MaxBody; any other route gets
// its body read (up to the server's limit) before it runs.
type Route struct {
	Method, Pattern string
	Handler         Handler
	Stream          bool
	MaxBody         int64
}

// Decode decodes body into v strictly: unknown fields and trailing data are
// a 400 bad_request that says what was wrong.
func Decode(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		msg := "the body must be JSON"
		if !errors.Is(err, io.EOF) {
			msg += ": " + strings.TrimPrefix(err.Error(), "json: ")
		}
		return apierr.New(http.StatusBadRequest, "bad_request", msg)
	}
	if dec.More() {
		return apierr.New(http.StatusBadRequest, "bad_request", "trailing data after the JSON value")
	}
	return nil
}

// JSON answers v with status.
func JSON(ctx *fasthttp.RequestCtx, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
	return nil
}

// Param is a path parameter as a string.
func Param(ctx *fasthttp.RequestCtx, name string) string {
	s, _ := ctx.UserValue(name).(string)
	return s
}

// streamKey holds a streamed route's start function (SetStreamStart).
type streamKey struct{}

// SetStreamStart is the front end's side of BeginStream: start switches a
// streamed body from the request's read timeout to the streaming deadline.
func SetStreamStart(ctx *fasthttp.RequestCtx, start func()) { ctx.SetUserValue(streamKey{}, start) }

// BeginStream is called by a Stream route once the caller is authenticated:
// until then its body is read under the server's read timeout, like any
// request's, so an anonymous client cannot hold a connection open by
// trickling a body; from then on the body may take longer, as long as it
// keeps the front end's minimum data rate.
func BeginStream(ctx *fasthttp.RequestCtx) {
	if start, ok := ctx.UserValue(streamKey{}).(func()); ok {
		start()
	}
}
