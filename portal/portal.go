package portal

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"net/netip"
	"time"

	"github.com/credfactory/credfactory/apierr"
	"github.com/credfactory/credfactory/ca"
	"github.com/credfactory/credfactory/clientauth"
	"github.com/credfactory/credfactory/ratelimit"
	"github.com/credfactory/credfactory/store"
)

// Keyed hashes claim codes; hsm.HMACKey in production.
type Keyed interface {
	Sum(ctx context.Context, data []byte) ([]byte, error)
}

// Observer receives what the portal measures (package metrics implements
// it): login results and tokens issued.
type Observer interface {
	ObserveLogin(result string)
	ObserveTokenIssued(mode string)
}

type nopObserver struct{}

func (nopObserver) ObserveLogin(string)       {}
func (nopObserver) ObserveTokenIssued(string) {}

// Config holds the portal's policy.
type Config struct {
	Observer Observer
	// MEFURI is where an Enrollee enrols (in untrusted bundles).
	MEFURI string
	// TrustAnchor is the root the Enrollee checks the MEF against.
	TrustAnchor *x509.Certificate
	// SPDomain is the SP's FQDN: the host of issued AE-ID URIs.
	SPDomain   string
	TokenTTL   time.Duration
	SessionTTL time.Duration
	NonceTTL   time.Duration
	// ClaimMaxFailures is a device's ceiling: past that many wrong claim
	// codes since its last claim, a claimant's next wrong code locks the
	// claimant at once (the device itself is never locked). An account is
	// locked after ClaimMaxFailuresAccount, across all its devices.
	ClaimMaxFailures        int
	ClaimMaxFailuresAccount int
	ClaimLockout            time.Duration
	// MaxNoncesPerDevice bounds a device's outstanding proof-of-control
	// nonces, one per claimant (docs/ownership.md).
	MaxNoncesPerDevice int
	// Limits are the rate limits on logins and token issuance (README
	// "Rate limits"); the zero value limits nothing.
	Limits ratelimit.Limits
	// MaxConcurrentUploads bounds the bulk uploads parsed at once (each
	// holds a chunk of rows and a parser's buffers); one more gets 503.
	MaxConcurrentUploads int
	// OnRevoke runs after a release or revocation that revoked something,
	// so that the CRL is regenerated at its next fetch instead of after
	// the registry check (castatus.Service.MarkStale).
	OnRevoke func()
	// OnOBFRevoke runs after disabling an OBF revoked its certificates:
	// the OBF CA's status service's MarkStale.
	OnOBFRevoke func()
}

func (c *Config) defaults() {
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	if c.TokenTTL == 0 {
		c.TokenTTL = 24 * time.Hour
	}
	if c.SessionTTL == 0 {
		c.SessionTTL = 12 * time.Hour
	}
	if c.NonceTTL == 0 {
		c.NonceTTL = 5 * time.Minute
	}
	if c.ClaimMaxFailures == 0 {
		c.ClaimMaxFailures = 5
	}
	if c.ClaimMaxFailuresAccount == 0 {
		c.ClaimMaxFailuresAccount = 25
	}
	if c.ClaimLockout == 0 {
		c.ClaimLockout = 15 * time.Minute
	}
	if c.MaxNoncesPerDevice == 0 {
		c.MaxNoncesPerDevice = 16
	}
	if c.MaxConcurrentUploads == 0 {
		c.MaxConcurrentUploads = 4
	}
}

// Portal is the portal's logic, shared by the JSON API and the pages.
type Portal struct {
	cfg      Config
	st       *store.Store
	claimKey Keyed
	issuing  *ca.CA
	obfCA    *ca.CA
	obfAuth  *clientauth.Verifier
	now      func() time.Time
	// anchorPEM and anchorSHA256 go into every untrusted bundle; the
	// anchor is fixed for the process, so they are encoded once.
	anchorPEM, anchorSHA256 string
	// uploads holds one token per bulk upload being parsed.
	uploads chan struct{}
	// loginPairs and loginNames slow failing logins (newLoginBackoff).
	loginPairs *ratelimit.Backoff[loginPair]
	loginNames *ratelimit.Backoff[string]
	// claimSources slows wrong claim codes per source address, beside the
	// account's budget (store/claims.go).
	claimSources *ratelimit.Backoff[ratelimit.Addr]
	touches      keyTouches
}

// New builds a Portal. obfCA certifies trusted OBFs' mTLS keys (issuing is
// the device and server CA); obfAuth verifies an OBF's client certificate
// when it vouches for a device.
func New(cfg Config, st *store.Store, claimKey Keyed, issuing, obfCA *ca.CA, obfAuth *clientauth.Verifier) *Portal {
	cfg.defaults()
	p := &Portal{cfg: cfg, st: st, claimKey: claimKey, issuing: issuing, obfCA: obfCA, obfAuth: obfAuth, now: time.Now,
		uploads: make(chan struct{}, cfg.MaxConcurrentUploads)}
	p.loginPairs, p.loginNames = newLoginBackoff()
	p.loginPairs.Now = func() time.Time { return p.now() }
	p.loginNames.Now = p.loginPairs.Now
	// A source may mistype as often as an account may (its budget), then
	// waits 1 s, doubled per further wrong code up to the lockout: never
	// locked, so many claimants behind one NAT address are slowed, not
	// shut out.
	p.claimSources = &ratelimit.Backoff[ratelimit.Addr]{Free: cfg.ClaimMaxFailuresAccount, Base: time.Second, Max: cfg.ClaimLockout,
		Forget: 4 * cfg.ClaimLockout, MaxKeys: 100_000, Now: p.loginPairs.Now}
	if cfg.TrustAnchor != nil {
		fp := sha256.Sum256(cfg.TrustAnchor.Raw)
		p.anchorPEM = string(ca.EncodeCertsPEM([]*x509.Certificate{cfg.TrustAnchor}))
		p.anchorSHA256 = hex.EncodeToString(fp[:])
	}
	return p
}

// Principal is who is calling.
type Principal struct {
	Stakeholder store.Stakeholder
	// Via is "session", "api-key" or "obf".
	Via     string
	Session *store.Session
	// OBF is set when a trusted OBF called with its client certificate.
	OBF *store.OBF
	// Key and Scopes are the API key a caller authenticated with.
	Key    *store.APIKey
	Scopes []string
	// Source is the client's address (ratelimit.Limits.Source), for the
	// per-source claim throttle.
	Source netip.Addr
}

// Tenant is the tenant the caller works in; "" for an sp-admin, who sees all.
func (p Principal) Tenant() string {
	if p.Stakeholder.Role == store.RoleSPAdmin {
		return ""
	}
	return p.Stakeholder.Tenant()
}

func (p Principal) actor() string {
	if p.OBF != nil {
		return "obf:" + p.OBF.ID
	}
	return p.Stakeholder.Name
}

// sees reports whether the caller may see a device of tenant.
func (p Principal) sees(tenant string) bool { return p.Tenant() == "" || p.Tenant() == tenant }

// Errors the portal answers with.
var (
	errUnauthenticated = apierr.New(http.StatusUnauthorized, "unauthenticated", "log in, or send Authorization: Bearer <API key>")
	errForbidden       = apierr.New(http.StatusForbidden, "forbidden", "your role may not do this")
	errDeviceNotFound  = apierr.New(http.StatusNotFound, "device_not_found", "no such device")
	// The database is up but this request lost every retry to concurrent
	// ones (README "Registry retries"): a conflict with the current state,
	// not an outage, and the same request may simply be sent again.
	errContention = &apierr.Error{Status: http.StatusConflict, Code: "registry_contention", Message: "the request kept conflicting with concurrent changes; retry it", RetryAfter: 1}
)

var errUploadsBusy = &apierr.Error{Status: http.StatusServiceUnavailable, Code: "uploads_busy",
	Message: "the portal is parsing as many uploads as it may at once; retry shortly", RetryAfter: 10}

// uploadSlot takes one of the MaxConcurrentUploads places, or refuses at
// once (a waiting upload would hold its connection and body anyway).
func (p *Portal) uploadSlot() (release func(), err error) {
	select {
	case p.uploads <- struct{}{}:
		return func() { <-p.uploads }, nil
	default:
		return nil, errUploadsBusy
	}
}

func requireRole(p Principal, roles ...string) error {
	for _, r := range roles {
		if p.Stakeholder.Role == r {
			return nil
		}
	}
	return errForbidden
}

// randomToken is 256 bits, URL-safe: session IDs, API keys, enrolment tokens.
func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func sha(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

// storeErr maps retries lost to contention to 409, the rest through. An
// outage (store.ErrUnavailable) needs no mapping: it answers 503 through
// apierr.Unavailable wherever it surfaces.
func storeErr(err error) error {
	if err == nil || !errors.Is(err, store.ErrContention) {
		return err
	}
	e := *errContention
	e.Err = err
	return &e
}
