package ratelimit

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credfactory/credfactory/apierr"
)

// clock is a fake clock a test moves by hand.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

type step struct {
	after time.Duration // advance the clock first
	key   string
	n     int
	ok    bool
	retry time.Duration // when refused
}

func TestGCRA(t *testing.T) {
	tests := []struct {
		name  string
		rate  float64
		burst int
		steps []step
	}{
		{"burst then refused", 1, 3, []step{
			{0, "a", 1, true, 0}, {0, "a", 1, true, 0}, {0, "a", 1, true, 0},
			{0, "a", 1, false, time.Second},
			{500 * time.Millisecond, "a", 1, false, 500 * time.Millisecond},
			{500 * time.Millisecond, "a", 1, true, 0},
			{0, "a", 1, false, time.Second},
		}},
		{"steady rate is admitted forever", 10, 1, []step{
			{0, "a", 1, true, 0}, {100 * time.Millisecond, "a", 1, true, 0}, {100 * time.Millisecond, "a", 1, true, 0},
			{100 * time.Millisecond, "a", 1, true, 0}, {50 * time.Millisecond, "a", 1, false, 50 * time.Millisecond},
		}},
		{"keys are independent", 1, 1, []step{
			{0, "a", 1, true, 0}, {0, "a", 1, false, time.Second}, {0, "b", 1, true, 0}, {0, "b", 1, false, time.Second},
		}},
		{"idle key gets the whole burst back, not more", 1, 2, []step{
			{0, "a", 1, true, 0}, {0, "a", 1, true, 0}, {0, "a", 1, false, time.Second},
			{time.Hour, "a", 1, true, 0}, {0, "a", 1, true, 0}, {0, "a", 1, false, time.Second},
		}},
		{"a batch passes with one cell free and pays in full", 10, 5, []step{
			{0, "obf", 20, true, 0},
			{0, "obf", 1, false, 1600 * time.Millisecond}, // 2 s of debt, minus 4 cells of tolerance
			{1600 * time.Millisecond, "obf", 1, true, 0},
		}},
		{"slow rate: retry is long", 0.01, 1, []step{
			{0, "x", 1, true, 0}, {time.Second, "x", 1, false, 99 * time.Second},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &clock{t: time.Unix(1_700_000_000, 0)}
			l := New[string](Options{Name: "t", Rate: tt.rate, Burst: tt.burst, Now: c.now})
			for i, s := range tt.steps {
				c.advance(s.after)
				ok, retry := l.AllowN(s.key, s.n)
				if ok != s.ok || retry != s.retry {
					t.Fatalf("step %d (%+v): got ok=%v retry=%v", i, s, ok, retry)
				}
			}
		})
	}
}

func TestRefusalRetryAfter(t *testing.T) {
	tests := []struct {
		wait time.Duration
		want int
	}{
		{time.Nanosecond, 1}, {999 * time.Millisecond, 1}, {time.Second, 1}, {time.Second + 1, 2}, {99 * time.Second, 99},
	}
	for _, tt := range tests {
		e := Refusal("login_source", tt.wait)
		if e.Status != http.StatusTooManyRequests || e.Code != "rate_limited" || e.RetryAfter != tt.want {
			t.Errorf("wait %v: got %d %s Retry-After %d, want 429 rate_limited %d", tt.wait, e.Status, e.Code, e.RetryAfter, tt.want)
		}
	}
	c := &clock{t: time.Unix(0, 0)}
	l := New[string](Options{Name: "login_account", Rate: 0.5, Burst: 1, Now: c.now})
	if err := l.Check("alice"); err != nil {
		t.Fatal(err)
	}
	c.advance(100 * time.Millisecond)
	var e *apierr.Error
	if err := l.Check("alice"); !errors.As(err, &e) || e.RetryAfter != 2 {
		t.Fatalf("second check: %v, want Retry-After 2 (1.9 s rounded up)", err)
	}
}

func TestDisabledLimiterAdmitsAll(t *testing.T) {
	l := New[string](Options{Name: "off", Rate: 0, Burst: 1})
	if l != nil {
		t.Fatal("rate 0 must give a nil limiter")
	}
	for range 1000 {
		if err := l.Check("k"); err != nil {
			t.Fatal(err)
		}
	}
}

// Many sources must not grow the map without bound: idle keys go, and at
// the bound the nearest-to-idle are evicted.
func TestMemoryIsBounded(t *testing.T) {
	c := &clock{t: time.Unix(0, 0)}
	const maxKeys = 64 * 4
	l := New[int](Options{Name: "t", Rate: 1, Burst: 5, MaxKeys: maxKeys, Now: c.now})
	shards := len(l.shards)
	bound := ((maxKeys + shards - 1) / shards) * shards
	for i := range 100_000 {
		l.Allow(i)
		if i%997 == 0 {
			c.advance(10 * time.Millisecond)
		}
	}
	if n := l.Len(); n > bound {
		t.Fatalf("after 100000 distinct keys the limiter holds %d, bound %d", n, bound)
	}
	// Every key is idle after its TAT: once a sweep has run (a minute on),
	// new keys find the shard empty of the old ones.
	c.advance(2 * time.Minute)
	for i := range shards * 4 {
		l.Allow(-1 - i)
	}
	if n := l.Len(); n > shards*4 {
		t.Fatalf("idle keys were not swept: %d keys tracked, %d active", n, shards*4)
	}
	// An active key that survived keeps its count: refused at once.
	c.advance(0)
	for range 5 {
		l.Allow(-1)
	}
	if ok, _ := l.Allow(-1); ok {
		t.Fatal("an active key lost its count")
	}
}

func TestSource(t *testing.T) {
	a := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	tests := []struct {
		name    string
		proxies []string
		peer    string
		xff     []string // one element per header line
		want    string
	}{
		{"no proxies: the peer, whatever the header says", nil, "192.0.2.7", []string{"198.51.100.1"}, "192.0.2.7"},
		{"untrusted peer: header ignored", []string{"10.0.0.0/8"}, "192.0.2.7", []string{"198.51.100.1"}, "192.0.2.7"},
		{"trusted proxy: the client it names", []string{"10.0.0.0/8"}, "10.1.2.3", []string{"198.51.100.1"}, "198.51.100.1"},
		{"spoofed entries left of the proxy's are skipped", []string{"10.0.0.0/8"}, "10.1.2.3", []string{"6.6.6.6, 198.51.100.1"}, "198.51.100.1"},
		{"chain of trusted proxies", []string{"10.0.0.0/8", "192.0.2.1"}, "10.1.2.3", []string{"198.51.100.1, 192.0.2.1"}, "198.51.100.1"},
		{"garbage: the last trusted hop", []string{"10.0.0.0/8"}, "10.1.2.3", []string{"nonsense"}, "10.1.2.3"},
		// HAProxy's option forwardfor appends its own line: the client's
		// spoofed line comes first and must not be taken for the client.
		{"proxy appends a line: the proxy's line wins", []string{"10.0.0.0/8"}, "10.1.2.3", []string{"6.6.6.6", "198.51.100.1"}, "198.51.100.1"},
		{"lines walked last to first through trusted hops", []string{"10.0.0.0/8"}, "10.1.2.3", []string{"6.6.6.6, 198.51.100.1", "10.9.9.9"}, "198.51.100.1"},
		{"entries of the last line right to left", []string{"10.0.0.0/8"}, "10.1.2.3", []string{"6.6.6.6", "198.51.100.1, 10.4.4.4"}, "198.51.100.1"},
		{"garbage in the last line: the last trusted hop", []string{"10.0.0.0/8"}, "10.1.2.3", []string{"6.6.6.6", "10.4.4.4, junk"}, "10.1.2.3"},
		{"the client is found before garbage further left", []string{"10.0.0.0/8"}, "10.1.2.3", []string{"junk, 6.6.6.6", "10.4.4.4"}, "6.6.6.6"},
		{"garbage line before trusted hops: the last trusted one", []string{"10.0.0.0/8"}, "10.1.2.3", []string{"junk", "10.4.4.4"}, "10.4.4.4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lim, err := Config{TrustedProxies: tt.proxies}.Build(nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			ctx := requestFrom(tt.peer, tt.xff...)
			if got := lim.Source(ctx); got != a(tt.want) {
				t.Fatalf("source %v, want %v", got, tt.want)
			}
		})
	}
	// IPv6: one /64 is one source.
	if AddrOf(a("2001:db8::1")) != AddrOf(a("2001:db8::ffff:1")) || AddrOf(a("2001:db8::1")) == AddrOf(a("2001:db8:0:1::1")) {
		t.Fatal("IPv6 sources must be keyed by /64")
	}
	if AddrOf(a("::ffff:192.0.2.1")) != AddrOf(a("192.0.2.1")) {
		t.Fatal("an IPv4-mapped address is its IPv4 address")
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		c    Config
		want string
	}{
		{DefaultConfig(), ""},
		{Config{}, ""},
		{Config{LoginSource: Rate{PerSecond: -1}}, "limits.login_source.rate"},
		{Config{EnrolOBF: Rate{PerSecond: 5}}, "limits.enrol_obf.burst"},
		{Config{TokenTenant: Rate{PerSecond: 0.0001, Burst: 1}}, "limits.token_tenant.rate"},
		{Config{TrustedProxies: []string{"10.0.0.0/33"}}, "limits.trusted_proxies"},
	}
	for _, tt := range tests {
		err := tt.c.Validate()
		if got := fmt.Sprint(err); tt.want == "" && err != nil || tt.want != "" && (err == nil || !contains(got, tt.want)) {
			t.Errorf("%+v: %v, want %q", tt.c, err, tt.want)
		}
	}
}

type countObserver struct{ refused atomic.Int64 }

func (o *countObserver) ObserveRateLimited(string)         { o.refused.Add(1) }
func (o *countObserver) ObserveLimit(string, float64, int) {}

func TestObserverCountsRefusals(t *testing.T) {
	obs := &countObserver{}
	l := New[string](Options{Name: "t", Rate: 1, Burst: 2, Observer: obs})
	for range 5 {
		l.Allow("k")
	}
	if n := obs.refused.Load(); n != 3 {
		t.Fatalf("refusals counted %d, want 3", n)
	}
}

// TestLoginAccountKeysTheWholeName: two account names that share a long
// prefix (multibyte names reach any byte cap quickly) are two accounts,
// each with its own budget, not one merged key.
func TestLoginAccountKeysTheWholeName(t *testing.T) {
	prefix := strings.Repeat("ü", 100) // 200 bytes
	tests := []struct {
		name   string
		a, b   string
		shared bool
	}{
		{"distinct long names", prefix + "a", prefix + "b", false},
		{"distinct short names", "alice", "bob", false},
		{"one name", prefix, prefix, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lim, err := Config{LoginAccount: Rate{PerSecond: 0.001, Burst: 1}}.Build(nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			ctx := requestFrom("192.0.2.1")
			if err := lim.CheckLogin(ctx, tt.a); err != nil {
				t.Fatalf("first login refused: %v", err)
			}
			err = lim.CheckLogin(ctx, tt.b)
			if tt.shared && err == nil {
				t.Fatal("a second login to one account within the burst was admitted")
			}
			if !tt.shared && err != nil {
				t.Fatalf("a login to another account was charged to the first: %v", err)
			}
		})
	}
}
