package server_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/credfactory/credfactory/apierr"
	"github.com/credfactory/credfactory/httpapi"
	"github.com/credfactory/credfactory/server"
	"github.com/valyala/fasthttp"
)

// TestStreamedBodyDeadlines drives a streamed route with real slow clients
// over TLS on loopback: an anonymous client is answered and cut off within
// the read timeout however it trickles its body, an authenticated one must
// keep the minimum rate and may not go idle, and an honest upload may take
// longer than the read timeout.
func TestStreamedBodyDeadlines(t *testing.T) {
	const readTimeout = time.Second
	_, _, base := start(t, server.Options{ReadTimeout: readTimeout, IdleTimeout: readTimeout, StreamMinRate: 1024},
		func(s *server.Server) {
			s.HandleStream(fasthttp.MethodPost, "/stream", 1<<20, func(ctx *fasthttp.RequestCtx) error {
				if len(ctx.Request.Header.Peek("Authorization")) == 0 {
					return apierr.New(http.StatusUnauthorized, "unauthenticated", "log in")
				}
				httpapi.BeginStream(ctx)
				n, err := io.Copy(io.Discard, ctx.RequestBodyStream())
				if err != nil {
					return err
				}
				ctx.SetBodyString(fmt.Sprint(n))
				return nil
			})
		})
	addr := strings.TrimPrefix(base, "https://")

	type chunk struct {
		size  int
		pause time.Duration
	}
	repeat := func(n int, c chunk) []chunk {
		out := make([]chunk, n)
		for i := range out {
			out[i] = c
		}
		return out
	}
	tests := []struct {
		name   string
		auth   bool
		chunks []chunk // sent one after the other, then the body ends
		status int
		// closedWithin: the server must have closed the connection this
		// long after the request began (0: the connection may stay).
		closedWithin time.Duration
	}{
		{"anonymous trickle: 401 at once, closed within the read timeout", false,
			repeat(30, chunk{1, 300 * time.Millisecond}), 401, readTimeout + time.Second},
		{"authenticated trickle below the minimum rate: cut off", true,
			repeat(30, chunk{1, 300 * time.Millisecond}), 408, readTimeout + 2*time.Second},
		{"authenticated, then idle: cut off after one read timeout", true,
			append([]chunk{{64 << 10, 0}}, chunk{1, 8 * time.Second}), 408, readTimeout + 2*time.Second},
		{"authenticated upload at a steady rate outlasts the read timeout", true,
			repeat(15, chunk{4 << 10, 200 * time.Millisecond}), 200, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			began := time.Now()
			hdr := "POST /stream HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
			if tt.auth {
				hdr += "Authorization: Bearer x\r\n"
			}
			if _, err := io.WriteString(conn, hdr+"\r\n"); err != nil {
				t.Fatal(err)
			}
			go func() {
				for _, c := range tt.chunks {
					time.Sleep(c.pause)
					if _, err := fmt.Fprintf(conn, "%x\r\n%s\r\n", c.size, strings.Repeat("x", c.size)); err != nil {
						return
					}
				}
				_, _ = io.WriteString(conn, "0\r\n\r\n")
			}()
			_ = conn.SetReadDeadline(began.Add(20 * time.Second))
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no answer after %v: %v", time.Since(began), err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d %s, want %d", resp.StatusCode, body, tt.status)
			}
			if tt.closedWithin == 0 {
				return
			}
			// Read until the server closes: nothing more may come.
			_ = conn.SetReadDeadline(began.Add(tt.closedWithin))
			if _, err := io.Copy(io.Discard, br); err != nil {
				t.Fatalf("connection still open %v after the request began (%v)", time.Since(began).Round(time.Millisecond), err)
			}
			if took := time.Since(began); took > tt.closedWithin {
				t.Fatalf("closed after %v, want within %v", took, tt.closedWithin)
			}
		})
	}
}

// TestHSTSOnTLSOnly: every answer over TLS carries Strict-Transport-
// Security, errors included; the plain-HTTP status listener's never does
// (RFC 6797 §7.2).
func TestHSTSOnTLSOnly(t *testing.T) {
	s, client, base := start(t, server.Options{StatusListen: "127.0.0.1:0"}, func(s *server.Server) {
		s.RegisterStatus(httpapi.Route{Method: "GET", Pattern: "/status", Handler: func(ctx *fasthttp.RequestCtx) error {
			ctx.SetBodyString("signed")
			return nil
		}})
	})
	for _, path := range []string{"/healthz", "/status", "/no-such-route"} {
		resp, err := client.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("Strict-Transport-Security"); got != server.HSTS {
			t.Errorf("TLS %s: Strict-Transport-Security %q, want %q", path, got, server.HSTS)
		}
	}
	resp, err := http.Get("http://" + s.StatusAddr().String() + "/status")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Strict-Transport-Security") != "" {
		t.Errorf("plain HTTP: %d, Strict-Transport-Security %q", resp.StatusCode, resp.Header.Get("Strict-Transport-Security"))
	}
}

// TestPprofOnlyOnTheOpsListener: /debug/pprof is served on the operations
// listener when asked for, and never on the TLS listener.
func TestPprofOnlyOnTheOpsListener(t *testing.T) {
	for _, on := range []bool{false, true} {
		srv, client, base := start(t, server.Options{OpsListen: "127.0.0.1:0", Pprof: on}, nil)
		resp, err := http.Get("http://" + srv.OpsAddr().String() + "/debug/pprof/cmdline")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if want := map[bool]int{false: 404, true: 200}[on]; resp.StatusCode != want {
			t.Errorf("pprof %v: ops listener answered %d, want %d", on, resp.StatusCode, want)
		}
		resp, err = client.Get(base + "/debug/pprof/cmdline")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 404 {
			t.Errorf("pprof %v: TLS listener answered %d, want 404", on, resp.StatusCode)
		}
	}
}
