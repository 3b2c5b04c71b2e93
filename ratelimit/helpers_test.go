package ratelimit

import (
	"net"
	"strings"

	"github.com/valyala/fasthttp"
)

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// requestFrom is a request from peer carrying one X-Forwarded-For header
// line per xff element (a proxy may append a line rather than extend one).
func requestFrom(peer string, xff ...string) *fasthttp.RequestCtx {
	var req fasthttp.Request
	for _, line := range xff {
		req.Header.Add("X-Forwarded-For", line)
	}
	ctx := &fasthttp.RequestCtx{}
	ctx.Init(&req, &net.TCPAddr{IP: net.ParseIP(peer), Port: 40000}, nil)
	return ctx
}
