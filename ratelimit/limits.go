package ratelimit

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"net/netip"
	"time"

	"github.com/valyala/fasthttp"
)

// Rate is one limit's setting.
type Rate struct {
	PerSecond float64 `yaml:"rate" help:"sustained requests per second per key, on each replica; 0 disables"`
	Burst     int     `yaml:"burst" help:"requests a key may make at once before the rate applies"`
}

// Config is the limits section of the server's configuration. Every rate is
// per replica (see the package doc).
type Config struct {
	EnrolSource  Rate `yaml:"enrol_source" help:"enrolments (EST simpleenroll and simplereenroll, POST /mef/v1/enrol) per source address, checked before any HSM work"`
	EnrolTenant  Rate `yaml:"enrol_tenant" help:"RSPF enrolments per tenant (the token's), checked after the token is read and before any HSM work"`
	EnrolOBF     Rate `yaml:"enrol_obf" help:"credentials forwarded per trusted OBF (its client certificate); a batch costs its item count"`
	TokenTenant  Rate `yaml:"token_tenant" help:"enrolment tokens issued per tenant (portal API and page)"`
	LoginSource  Rate `yaml:"login_source" help:"portal logins per source address, checked before the password hash"`
	LoginAccount Rate `yaml:"login_account" help:"portal logins per account name, checked before the password hash"`
	StatusSource Rate `yaml:"status_source" help:"CRL and OCSP requests per source address (unauthenticated: each OCSP answer is a registry read and an HSM signature), checked before anything else"`
	MaxKeys      int  `yaml:"max_keys" help:"most keys (addresses, tenants, names) each limit tracks; idle ones are dropped first"`
	// TrustedProxies name the reverse proxies allowed to say who the
	// client is; anyone else's X-Forwarded-For is ignored (it is just a
	// header, and a client could otherwise pick a fresh source per request).
	TrustedProxies []string `yaml:"trusted_proxies" help:"addresses or CIDRs of reverse proxies whose X-Forwarded-For names the client; empty: the TCP peer is the source"`
}

// Names of the limits: metric labels and config keys.
const (
	NameEnrolSource  = "enrol_source"
	NameEnrolTenant  = "enrol_tenant"
	NameEnrolOBF     = "enrol_obf"
	NameTokenTenant  = "token_tenant"
	NameLoginSource  = "login_source"
	NameLoginAccount = "login_account"
	NameStatusSource = "status_source"
)

// DefaultConfig is generous for honest clients: a factory line behind one
// NAT address enrols hundreds of devices a second; a person logs in rarely.
// The bench (credfactory bench) turns the limits off: it measures the
// server, not them.
func DefaultConfig() Config {
	return Config{
		EnrolSource:  Rate{PerSecond: 200, Burst: 400},
		EnrolTenant:  Rate{PerSecond: 1000, Burst: 2000},
		EnrolOBF:     Rate{PerSecond: 2000, Burst: 5000},
		TokenTenant:  Rate{PerSecond: 500, Burst: 1000},
		LoginSource:  Rate{PerSecond: 2, Burst: 20},
		LoginAccount: Rate{PerSecond: 1, Burst: 10},
		// A relying party checks one certificate per connection it
		// accepts; a busy server behind one address may check many.
		StatusSource: Rate{PerSecond: 100, Burst: 200},
		MaxKeys:      DefaultMaxKeys,
	}
}

func (c Config) named() []struct {
	name string
	r    Rate
} {
	return []struct {
		name string
		r    Rate
	}{{NameEnrolSource, c.EnrolSource}, {NameEnrolTenant, c.EnrolTenant}, {NameEnrolOBF, c.EnrolOBF},
		{NameTokenTenant, c.TokenTenant}, {NameLoginSource, c.LoginSource}, {NameLoginAccount, c.LoginAccount},
		{NameStatusSource, c.StatusSource}}
}

// Validate says what is wrong with c, naming the setting.
func (c Config) Validate() error {
	for _, n := range c.named() {
		switch r := n.r; {
		case r.PerSecond < 0 || r.PerSecond != r.PerSecond:
			return fmt.Errorf("limits.%s.rate must be 0 (off) or positive", n.name)
		case r.PerSecond > 0 && r.PerSecond < 0.001:
			return fmt.Errorf("limits.%s.rate must be at least 0.001 per second (or 0, off)", n.name)
		case r.PerSecond > 0 && (r.Burst < 1 || r.Burst > 1_000_000):
			return fmt.Errorf("limits.%s.burst must be 1 to 1000000", n.name)
		}
	}
	if c.MaxKeys < 0 {
		return fmt.Errorf("limits.max_keys must not be negative")
	}
	if _, err := parsePrefixes(c.TrustedProxies); err != nil {
		return err
	}
	return nil
}

func parsePrefixes(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("limits.trusted_proxies: %q is neither an address nor a CIDR", s)
			}
			p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// Limits are the server's limits; a nil one is off. The zero value limits
// nothing (unit tests of the components, admin commands).
type Limits struct {
	EnrolSource  *Limiter[Addr]
	EnrolTenant  *Limiter[string]
	EnrolOBF     *Limiter[string]
	TokenTenant  *Limiter[string]
	LoginSource  *Limiter[Addr]
	LoginAccount *Limiter[Account]
	StatusSource *Limiter[Addr]
	proxies      []netip.Prefix
}

// Build makes the limits c configures and publishes their settings to obs
// (which may be nil); now is the clock (nil: the real one).
func (c Config) Build(obs Observer, now func() time.Time) (Limits, error) {
	if err := c.Validate(); err != nil {
		return Limits{}, err
	}
	proxies, _ := parsePrefixes(c.TrustedProxies)
	opts := func(name string, r Rate) Options {
		if obs != nil {
			if r.PerSecond <= 0 {
				r = Rate{}
			}
			obs.ObserveLimit(name, r.PerSecond, r.Burst)
		}
		return Options{Name: name, Rate: r.PerSecond, Burst: r.Burst, MaxKeys: c.MaxKeys, Now: now, Observer: obs}
	}
	return Limits{
		EnrolSource:  New[Addr](opts(NameEnrolSource, c.EnrolSource)),
		EnrolTenant:  New[string](opts(NameEnrolTenant, c.EnrolTenant)),
		EnrolOBF:     New[string](opts(NameEnrolOBF, c.EnrolOBF)),
		TokenTenant:  New[string](opts(NameTokenTenant, c.TokenTenant)),
		LoginSource:  New[Addr](opts(NameLoginSource, c.LoginSource)),
		LoginAccount: New[Account](opts(NameLoginAccount, c.LoginAccount)),
		StatusSource: New[Addr](opts(NameStatusSource, c.StatusSource)),
		proxies:      proxies,
	}, nil
}

// Addr keys a source: an IPv4 address (as IPv4-mapped IPv6), or an IPv6
// address's /64, since one IPv6 host commonly holds a whole /64 and could
// otherwise take a fresh address, and a fresh burst, per request.
type Addr [16]byte

// AddrOf is the key of ip.
func AddrOf(ip netip.Addr) Addr {
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		ip = p.Addr()
	}
	return Addr(netip.AddrFrom16(ip.As16()).As16())
}

// Source is the client's address: the TCP peer, or, when the peer is a
// trusted proxy, the rightmost X-Forwarded-For entry that is not itself a
// trusted proxy (entries further left are whatever the client claimed).
//
// Every X-Forwarded-For line counts, last to first: a proxy may append a
// line of its own (HAProxy's option forwardfor) rather than extend the
// client's, and the first line is then the client's own claim. A malformed
// entry ends the walk at the last trusted hop.
func (l *Limits) Source(ctx *fasthttp.RequestCtx) netip.Addr {
	peer, _ := netip.AddrFromSlice(ctx.RemoteIP())
	peer = peer.Unmap()
	if len(l.proxies) == 0 || !l.trusted(peer) {
		return peer
	}
	lines := ctx.Request.Header.PeekAll("X-Forwarded-For")
	for i := len(lines) - 1; i >= 0; i-- {
		xff := lines[i]
		for len(xff) > 0 {
			var part []byte
			if j := bytes.LastIndexByte(xff, ','); j >= 0 {
				part, xff = xff[j+1:], xff[:j]
			} else {
				part, xff = xff, nil
			}
			a, err := netip.ParseAddr(string(bytes.TrimSpace(part)))
			if err != nil {
				return peer // garbage: the last trusted hop is the best we know
			}
			peer = a.Unmap()
			if !l.trusted(peer) {
				return peer
			}
		}
	}
	return peer
}

func (l *Limits) trusted(a netip.Addr) bool {
	for _, p := range l.proxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// CheckEnrolSource applies enrol_source to the request's source.
func (l *Limits) CheckEnrolSource(ctx *fasthttp.RequestCtx) error {
	if l.EnrolSource == nil {
		return nil
	}
	return l.EnrolSource.Check(AddrOf(l.Source(ctx)))
}

// CheckStatusSource applies status_source (CRL and OCSP) to the request's
// source.
func (l *Limits) CheckStatusSource(ctx *fasthttp.RequestCtx) error {
	if l.StatusSource == nil {
		return nil
	}
	return l.StatusSource.Check(AddrOf(l.Source(ctx)))
}

// CheckLogin applies login_source and login_account, before any password
// is hashed: a flood of logins costs a map lookup each, not argon2.
// Both are charged, so a spray of names from one address and a guess at
// one name from many addresses are each held to their limit.
func (l *Limits) CheckLogin(ctx *fasthttp.RequestCtx, account string) error {
	if l.LoginSource != nil {
		if err := l.LoginSource.Check(AddrOf(l.Source(ctx))); err != nil {
			return err
		}
	}
	if l.LoginAccount == nil {
		return nil
	}
	return l.LoginAccount.Check(AccountOf(account))
}

// Account keys login_account: the SHA-256 of the whole (caller-normalised)
// name. A fixed-size key means a huge name cannot pin its form body in the
// map, and unlike a truncated prefix it keeps two long names (multibyte
// ones reach any byte cap quickly) apart, each with its own budget.
type Account [sha256.Size]byte

// AccountOf is the key of the account name.
func AccountOf(name string) Account { return sha256.Sum256([]byte(name)) }
