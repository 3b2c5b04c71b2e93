package portal

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/credfactory/credfactory/apierr"
	"github.com/credfactory/credfactory/ratelimit"
	"github.com/credfactory/credfactory/store"
	"github.com/google/uuid"
	"github.com/valyala/fasthttp"
)

// SessionCookie names the browser session cookie.
const SessionCookie = "cf_session"

var (
	errBadLogin = apierr.New(http.StatusUnauthorized, "bad_credentials", "wrong name or password")
	errCSRF     = apierr.New(http.StatusForbidden, "csrf", "missing or wrong CSRF token: reload the page and try again")
	errDisabled = apierr.New(http.StatusUnauthorized, "stakeholder_disabled", "this account is disabled")
)

// errTooManyLogins is the answer while a name (or this source's attempts
// at it) must wait: the same for every name, known, unknown or disabled.
func errTooManyLogins(wait time.Duration) error {
	return &apierr.Error{Status: http.StatusTooManyRequests, Code: "too_many_attempts",
		Message: "too many failed logins: wait before trying again", RetryAfter: int((wait + time.Second - 1) / time.Second)}
}

// loginPair keys the backoff of one source's attempts at one name.
type loginPair struct {
	source netip.Addr
	name   string
}

// Login backoff (see Backoff): a source that keeps failing at one name is
// slowed hard (3 free failures, then 1 s doubling to 15 min); a name that
// keeps failing from anywhere is slowed gently (10 free, then 1 s doubling
// to 30 s), so that a distributed guesser gets a few guesses a minute while
// the rightful user, from their own address, waits at most 30 s and is
// never refused once the wait has passed. Per replica, in memory; the rate
// limits (ratelimit.Limits.CheckLogin) bound the cost before both.
func newLoginBackoff() (*ratelimit.Backoff[loginPair], *ratelimit.Backoff[string]) {
	return &ratelimit.Backoff[loginPair]{Free: 3, Base: time.Second, Max: 15 * time.Minute, Forget: time.Hour, MaxKeys: 100_000},
		&ratelimit.Backoff[string]{Free: 10, Base: time.Second, Max: 30 * time.Second, Forget: time.Hour, MaxKeys: 100_000}
}

// Login checks a password and opens a session. The cookie value is
// returned once; only its hash is stored. An unknown name, a wrong
// password and a disabled account get the same answer after the same work
// (one argon2 hash), and every name is slowed alike after failures.
func (p *Portal) Login(ctx context.Context, source netip.Addr, name, password string) (cookie string, sess store.Session, err error) {
	result := "error"
	defer func() {
		var e *apierr.Error
		if err == nil {
			result = "ok"
		} else if result == "error" && errors.As(err, &e) {
			result = e.Code
		}
		p.cfg.Observer.ObserveLogin(result)
	}()
	now := p.now()
	pair := loginPair{source, name}
	if wait := max(p.loginPairs.Wait(pair), p.loginNames.Wait(name)); wait > 0 {
		return "", sess, errTooManyLogins(wait)
	}
	failed := func() {
		p.loginPairs.Failed(pair)
		p.loginNames.Failed(name)
	}
	st, err := p.st.StakeholderBy(ctx, "name", name)
	if errors.Is(err, store.ErrNotFound) {
		_, _ = checkPassword(dummyHash, password) // same cost as a real check
		failed()
		return "", sess, errBadLogin
	}
	if err != nil {
		return "", sess, storeErr(err)
	}
	ok, err := checkPassword(st.PasswordHash, password)
	if err != nil {
		return "", sess, err
	}
	if !ok || st.DisabledAt != nil {
		failed()
		action := "login.failure"
		if ok {
			// The operator's metrics and the audit trail tell a disabled
			// account apart; the answer does not.
			result, action = "stakeholder_disabled", "login.disabled"
		}
		_ = p.st.AppendAudit(ctx, store.AuditEvent{At: now, Tenant: st.Tenant(), Actor: name, Action: action, Subject: st.ID, Detail: map[string]any{}})
		return "", sess, errBadLogin
	}
	p.loginPairs.Succeeded(pair)
	p.loginNames.Succeeded(name)
	cookie = randomToken()
	sess = store.Session{IDHash: sha(cookie), StakeholderID: st.ID, CSRF: randomToken(), CreatedAt: now, ExpiresAt: now.Add(p.cfg.SessionTTL)}
	if err := p.st.CreateSession(ctx, sess); err != nil {
		return "", sess, storeErr(err)
	}
	_ = p.st.AppendAudit(ctx, store.AuditEvent{At: now, Tenant: st.Tenant(), Actor: name, Action: "login", Subject: st.ID, Detail: map[string]any{}})
	return cookie, sess, nil
}

// Logout ends the session behind a cookie.
func (p *Portal) Logout(ctx context.Context, cookie string) error {
	return storeErr(p.st.DeleteSession(ctx, sha(cookie)))
}

// SetSessionCookie writes the session cookie: Secure (the portal is HTTPS
// only), HttpOnly (no script reads it), SameSite=Strict (no cross-site
// request carries it; CSRF tokens are the second line).
func SetSessionCookie(ctx *fasthttp.RequestCtx, value string, expires time.Time) {
	var c fasthttp.Cookie
	c.SetKey(SessionCookie)
	c.SetValue(value)
	c.SetPath("/")
	c.SetSecure(true)
	c.SetHTTPOnly(true)
	c.SetSameSite(fasthttp.CookieSameSiteStrictMode)
	if value == "" {
		c.SetExpire(fasthttp.CookieExpireDelete)
	} else {
		c.SetExpire(expires)
	}
	ctx.Response.Header.SetCookie(&c)
}

// Authenticate finds the caller of a request: an API key (Bearer), a
// trusted OBF's client certificate (only where allowOBF), or the session
// cookie. For a cookie-authenticated unsafe request the CSRF token must come
// in the X-CSRF-Token header or the "csrf" field of a url-encoded form body,
// never the query string: a URL is logged, cached, kept in history and
// sent on in Referer, so a token there is a token given away.
func (p *Portal) Authenticate(ctx *fasthttp.RequestCtx, allowOBF bool) (Principal, error) {
	return p.authenticate(ctx, allowOBF, func() []byte { return ctx.PostArgs().Peek("csrf") })
}

// authenticate is Authenticate with the form's CSRF token fetched by
// formCSRF, which is called only for a cookie session's unsafe request that
// has no X-CSRF-Token header. A streamed multipart form cannot be read with
// ctx.FormValue: its page reads the token from the form's first part.
func (p *Portal) authenticate(ctx *fasthttp.RequestCtx, allowOBF bool, formCSRF func() []byte) (Principal, error) {
	who, err := p.principal(ctx, allowOBF, formCSRF)
	if err == nil {
		who.Source = p.cfg.Limits.Source(ctx)
	}
	return who, err
}

func (p *Portal) principal(ctx *fasthttp.RequestCtx, allowOBF bool, formCSRF func() []byte) (Principal, error) {
	now := p.now()
	if auth := string(ctx.Request.Header.Peek("Authorization")); auth != "" {
		key, ok := strings.CutPrefix(auth, "Bearer ")
		if !ok || key == "" {
			return Principal{}, errUnauthenticated
		}
		k, st, err := p.st.APIKeyByHash(ctx, sha(key))
		if errors.Is(err, store.ErrNotFound) {
			return Principal{}, apierr.New(http.StatusUnauthorized, "bad_api_key", "unknown or revoked API key")
		}
		if err != nil {
			return Principal{}, storeErr(err)
		}
		if st.DisabledAt != nil {
			return Principal{}, errDisabled
		}
		p.touch(k)
		return Principal{Stakeholder: st, Via: "api-key", Key: &k, Scopes: k.Scopes}, nil
	}
	if allowOBF && p.obfAuth != nil {
		if peer, err := p.obfAuth.Verify(ctx.TLSConnectionState()); err == nil {
			o, err := p.st.OBFBy(ctx, "client_cert_sha256", peer.SHA256[:])
			if err == nil && o.Trusted && o.DisabledAt == nil {
				st, err := p.st.StakeholderBy(ctx, "id", o.StakeholderID)
				if err != nil {
					return Principal{}, storeErr(err)
				}
				return Principal{Stakeholder: st, Via: "obf", OBF: &o}, nil
			}
		}
	}
	cookie := string(ctx.Request.Header.Cookie(SessionCookie))
	if cookie == "" {
		return Principal{}, errUnauthenticated
	}
	sess, st, err := p.st.SessionByHash(ctx, sha(cookie), now)
	if errors.Is(err, store.ErrNotFound) {
		return Principal{}, apierr.New(http.StatusUnauthorized, "session_expired", "your session has ended: log in again")
	}
	if err != nil {
		return Principal{}, storeErr(err)
	}
	if st.DisabledAt != nil {
		return Principal{}, errDisabled
	}
	if !ctx.IsGet() && !ctx.IsHead() {
		token := ctx.Request.Header.Peek("X-CSRF-Token")
		if len(token) == 0 {
			token = formCSRF()
		}
		if subtle.ConstantTimeCompare(bytes.TrimSpace(token), []byte(sess.CSRF)) != 1 {
			return Principal{}, errCSRF
		}
	}
	return Principal{Stakeholder: st, Via: "session", Session: &sess}, nil
}

// NewAPIKey makes a key for the caller with the scopes asked for
// (DefaultScopes when none); the key is shown once. A key may mint keys only
// with ScopeKeys, and only with scopes it holds itself; the new key records
// its creator and the key that minted it, and is revoked with that key.
func (p *Portal) NewAPIKey(ctx context.Context, who Principal, name string, scopes ...string) (string, store.APIKey, error) {
	if who.Via == "obf" {
		return "", store.APIKey{}, errForbidden
	}
	if err := requireScope(who, ScopeKeys); err != nil {
		return "", store.APIKey{}, err
	}
	name = strings.TrimSpace(name)
	if name == "" || len(name) > 100 {
		return "", store.APIKey{}, apierr.New(http.StatusBadRequest, "bad_name", "an API key needs a name of 1 to 100 characters")
	}
	if len(scopes) == 0 {
		if who.Via == "admin-cli" {
			scopes = AllScopes // the operator's own key for a stakeholder
		} else {
			for _, s := range DefaultScopes { // as far as the minter holds them
				if who.can(s) {
					scopes = append(scopes, s)
				}
			}
			if len(scopes) == 0 {
				scopes = []string{ScopeRead}
			}
		}
	}
	scopes, err := checkScopes(scopes)
	if err != nil {
		return "", store.APIKey{}, err
	}
	for _, s := range scopes {
		if !who.can(s) {
			return "", store.APIKey{}, apierr.New(http.StatusForbidden, "scope_missing",
				fmt.Sprintf("a key cannot give the %q scope it lacks itself", s))
		}
	}
	key := "cfk_" + randomToken()
	k := store.APIKey{ID: uuid.NewString(), StakeholderID: who.Stakeholder.ID, Name: name, KeyHash: sha(key), CreatedAt: p.now(),
		Scopes: scopes, CreatedBy: who.creator()}
	if who.Key != nil {
		k.ParentKeyID = &who.Key.ID
	}
	if err := p.st.CreateAPIKey(ctx, k); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return "", k, apierr.New(http.StatusUnauthorized, "bad_api_key", "unknown or revoked API key")
		}
		return "", k, storeErr(err)
	}
	_ = p.st.AppendAudit(ctx, store.AuditEvent{At: k.CreatedAt, Tenant: who.Stakeholder.Tenant(), Actor: who.actor(),
		Action: "api_key.create", Subject: k.ID, Detail: map[string]any{"name": name, "scopes": strings.Join(scopes, " "), "createdBy": k.CreatedBy}})
	return key, k, nil
}

// creator is what a key made by this caller records as its creator.
func (p Principal) creator() string {
	switch {
	case p.Key != nil:
		return "api-key:" + p.Key.ID
	case p.Via == "session":
		return "session:" + p.Stakeholder.Name
	}
	return p.Via
}

// APIKeys lists the caller's keys.
func (p *Portal) APIKeys(ctx context.Context, who Principal) ([]store.APIKey, error) {
	if err := requireScope(who, ScopeKeys); err != nil {
		return nil, err
	}
	keys, err := p.st.APIKeys(ctx, who.Stakeholder.ID)
	return keys, storeErr(err)
}

// RevokeAPIKey revokes one of the caller's keys and every key minted from
// it (a leaked key's offspring are as leaked as it is); it returns the IDs
// revoked. Revoking other keys takes the keys scope; a key may always
// revoke itself.
func (p *Portal) RevokeAPIKey(ctx context.Context, who Principal, id string) ([]string, error) {
	if who.Key == nil || who.Key.ID != id {
		if err := requireScope(who, ScopeKeys); err != nil {
			return nil, err
		}
	}
	ids, err := p.st.RevokeAPIKey(ctx, who.Stakeholder.ID, id, p.now())
	if errors.Is(err, store.ErrNotFound) {
		return nil, apierr.New(http.StatusNotFound, "api_key_not_found", "no such API key")
	}
	if err == nil {
		_ = p.st.AppendAudit(ctx, store.AuditEvent{At: p.now(), Tenant: who.Stakeholder.Tenant(), Actor: who.actor(),
			Action: "api_key.revoke", Subject: id, Detail: map[string]any{"minted": strings.Join(ids[1:], " ")}})
	}
	return ids, storeErr(err)
}

// CreateStakeholder adds an account (the admin CLI, and sp-admins).
func (p *Portal) CreateStakeholder(ctx context.Context, name, role, password string, actsFor string) (store.Stakeholder, error) {
	name = strings.TrimSpace(name)
	if name == "" || len(name) > 100 {
		return store.Stakeholder{}, fmt.Errorf("a stakeholder needs a name of 1 to 100 characters")
	}
	if err := CheckPasswordRule(name, password); err != nil {
		return store.Stakeholder{}, err
	}
	hash := hashPassword(password)
	st := store.Stakeholder{ID: uuid.NewString(), Name: name, Role: role, PasswordHash: hash, CreatedAt: p.now()}
	if actsFor != "" {
		sub, err := p.st.StakeholderBy(ctx, "name", actsFor)
		if err != nil {
			return st, fmt.Errorf("the subscriber %q: %w", actsFor, err)
		}
		st.ActsFor = &sub.ID
	}
	if err := p.st.CreateStakeholder(ctx, st); err != nil {
		return st, err
	}
	_ = p.st.AppendAudit(ctx, store.AuditEvent{At: st.CreatedAt, Tenant: st.Tenant(), Actor: "admin-cli", Action: "stakeholder.create",
		Subject: st.ID, Detail: map[string]any{"name": name, "role": role}})
	return st, nil
}
