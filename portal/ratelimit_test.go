package portal

import (
	"context"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credfactory/credfactory/ratelimit"
	"github.com/credfactory/credfactory/store"
	"github.com/valyala/fasthttp"
)

// TestLoginLimitsComeBeforeTheHash: a login flood past the per-source or
// per-account limit is refused without hashing a password, so it cannot
// burn argon2's CPU and memory (README "Rate limits"). The hash is counted
// through the checkPassword hook.
func TestLoginLimitsComeBeforeTheHash(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, "sqlite://"+filepath.Join(t.TempDir(), "registry.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	var hashes atomic.Int64
	orig := checkPassword
	checkPassword = func(hash, password string) (bool, error) {
		hashes.Add(1)
		return orig(hash, password)
	}
	t.Cleanup(func() { checkPassword = orig })

	type attempt struct{ ip, name string }
	flood := func(ip string, names ...string) []attempt {
		var out []attempt
		for _, n := range names {
			out = append(out, attempt{ip, n})
		}
		return out
	}
	many := func(n int, f func(i int) attempt) []attempt {
		out := make([]attempt, n)
		for i := range out {
			out[i] = f(i)
		}
		return out
	}
	tests := []struct {
		name       string
		cfg        ratelimit.Config
		attempts   []attempt
		wantHashes int64
		want429    int
	}{
		{"one source, many names", ratelimit.Config{LoginSource: ratelimit.Rate{PerSecond: 1, Burst: 3}},
			many(40, func(i int) attempt { return attempt{"192.0.2.1", "guess-" + strconv.Itoa(i)} }), 3, 37},
		{"one account, many sources", ratelimit.Config{LoginSource: ratelimit.Rate{PerSecond: 1, Burst: 3}, LoginAccount: ratelimit.Rate{PerSecond: 1, Burst: 2}},
			many(40, func(i int) attempt { return attempt{"198.51.100." + strconv.Itoa(i+1), "victim"} }), 2, 38},
		{"limits off: every attempt is hashed", ratelimit.Config{},
			flood("192.0.2.1", "a", "b", "c", "d", "e"), 5, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := time.Unix(1_700_000_000, 0)
			limits, err := tt.cfg.Build(nil, func() time.Time { return now })
			if err != nil {
				t.Fatal(err)
			}
			p := New(Config{Limits: limits}, st, nil, nil, nil, nil)
			hashes.Store(0)
			got429 := 0
			for _, a := range tt.attempts {
				var req fasthttp.Request
				req.Header.SetMethod("POST")
				req.SetRequestURI("https://portal.example/login")
				req.Header.SetContentType("application/x-www-form-urlencoded")
				req.SetBodyString(url.Values{"name": {a.name}, "password": {"not the password"}}.Encode())
				rc := &fasthttp.RequestCtx{}
				rc.Init(&req, &net.TCPAddr{IP: net.ParseIP(a.ip), Port: 50000}, nil)
				if err := p.pageLoginPost(rc); err != nil {
					t.Fatal(err)
				}
				switch rc.Response.StatusCode() {
				case fasthttp.StatusTooManyRequests:
					got429++
					if len(rc.Response.Header.Peek("Retry-After")) == 0 {
						t.Fatal("a 429 without Retry-After")
					}
				case fasthttp.StatusUnauthorized:
				default:
					t.Fatalf("login answered %d", rc.Response.StatusCode())
				}
			}
			if n := hashes.Load(); n != tt.wantHashes || got429 != tt.want429 {
				t.Fatalf("%d attempts: %d password hashes and %d refusals, want %d and %d", len(tt.attempts), n, got429, tt.wantHashes, tt.want429)
			}
		})
	}
}
