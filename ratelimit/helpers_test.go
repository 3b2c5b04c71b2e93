package ratelimit

import (
	"net"
	"strings"

	"github.com/valyala/fasthttp"
)

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func requestFrom(peer, xff string) *fasthttp.RequestCtx {
	var req fasthttp.Request
	if xff != "" {
		req.Header.Set("X-Forwarded-For", xff)
	}
	ctx := &fasthttp.RequestCtx{}
	ctx.Init(&req, &net.TCPAddr{IP: net.ParseIP(peer), Port: 40000}, nil)
	return ctx
}
