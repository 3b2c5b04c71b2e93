package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
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
			msg += ": " + JSONError(err)
		}
		return apierr.New(http.StatusBadRequest, "bad_request", msg)
	}
	if dec.More() {
		return apierr.New(http.StatusBadRequest, "bad_request", "trailing data after the JSON value")
	}
	return nil
}

// JSONError says what a JSON decoding error means in the API's own terms:
// the field by its JSON path and the JSON type expected, never a Go struct
// or type name.
func JSONError(err error) string {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		want := jsonType(typeErr.Type)
		if typeErr.Field == "" {
			return fmt.Sprintf("want %s, not %s", want, typeErr.Value)
		}
		return fmt.Sprintf("%q must be %s, not %s", typeErr.Field, want, typeErr.Value)
	case errors.As(err, &syntaxErr):
		return fmt.Sprintf("%s (at byte %d)", strings.TrimPrefix(syntaxErr.Error(), "json: "), syntaxErr.Offset)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "the JSON ends too early"
	}
	msg := strings.TrimPrefix(err.Error(), "json: ")
	if strings.Contains(msg, "Go ") { // never name our types
		return "not the expected JSON value"
	}
	return msg
}

func jsonType(t reflect.Type) string {
	if t == nil {
		return "another type"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		if t.String() == "time.Time" {
			return "an RFC 3339 time string"
		}
		return "an object"
	case reflect.Pointer:
		return jsonType(t.Elem())
	}
	return "another type"
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
