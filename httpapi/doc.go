// Package httpapi is what the components' HTTP handlers share: the Route a
// component hands the front end (components never import package server),
// strict JSON decoding (an unknown field is an error, not a silent default)
// and JSON answers. The error shape itself is package apierr.
package httpapi
