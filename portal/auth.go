package portal

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/credfactory/credfactory/apierr"
	"github.com/credfactory/credfactory/store"
	"github.com/google/uuid"
	"github.com/valyala/fasthttp"
)

// SessionCookie names the browser session cookie.
const SessionCookie = "cf_session"

var (
	errBadLogin = apierr.New(http.StatusUnauthorized, "bad_credentials", "wrong name or password")
	errLocked   = &apierr.Error{Status: http.StatusTooManyRequests, Code: "account_locked", Message: "too many failed logins: the account is locked for a while", RetryAfter: 900}
	errCSRF     = apierr.New(http.StatusForbidden, "csrf", "missing or wrong CSRF token: reload the page and try again")
	errDisabled = apierr.New(http.StatusUnauthorized, "stakeholder_disabled", "this account is disabled")
)

// Login checks a password and opens a session. The cookie value is
// returned once; only its hash is stored.
func (p *Portal) Login(ctx context.Context, name, password string) (cookie string, sess store.Session, err error) {
	defer func() {
		result := "ok"
		var e *apierr.Error
		if errors.As(err, &e) {
			result = e.Code
		} else if err != nil {
			result = "error"
		}
		p.cfg.Observer.ObserveLogin(result)
	}()
	now := p.now()
	st, err := p.st.StakeholderBy(ctx, "name", name)
	if errors.Is(err, store.ErrNotFound) {
		_, _ = checkPassword(dummyHash, password) // same cost as a real check
		return "", sess, errBadLogin
	}
	if err != nil {
		return "", sess, err
	}
	if st.DisabledAt != nil {
		return "", sess, errDisabled
	}
	if st.LockedUntil != nil && now.Before(*st.LockedUntil) {
		e := *errLocked
		e.RetryAfter = int(st.LockedUntil.Sub(now).Seconds()) + 1
		return "", sess, &e
	}
	ok, err := checkPassword(st.PasswordHash, password)
	if err != nil {
		return "", sess, err
	}
	locked, err := p.st.LoginResult(ctx, st.ID, ok, now, p.cfg.LoginMaxFailures, p.cfg.LoginLockout)
	if err != nil {
		return "", sess, err
	}
	if !ok {
		_ = p.st.AppendAudit(ctx, store.AuditEvent{At: now, Tenant: st.Tenant(), Actor: name, Action: "login.failure", Subject: st.ID, Detail: map[string]any{}})
	}
	if locked != nil {
		// Locked by this failure, or by a concurrent one while the password
		// was being checked: the right password does not get past a lock.
		e := *errLocked
		e.RetryAfter = int(locked.Sub(now).Seconds()) + 1
		return "", sess, &e
	}
	if !ok {
		return "", sess, errBadLogin
	}
	cookie = randomToken()
	sess = store.Session{IDHash: sha(cookie), StakeholderID: st.ID, CSRF: randomToken(), CreatedAt: now, ExpiresAt: now.Add(p.cfg.SessionTTL)}
	if err := p.st.CreateSession(ctx, sess); err != nil {
		return "", sess, err
	}
	_ = p.st.AppendAudit(ctx, store.AuditEvent{At: now, Tenant: st.Tenant(), Actor: name, Action: "login", Subject: st.ID, Detail: map[string]any{}})
	return cookie, sess, nil
}

// Logout ends the session behind a cookie.
func (p *Portal) Logout(ctx context.Context, cookie string) error {
	return p.st.DeleteSession(ctx, sha(cookie))
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
// in the X-CSRF-Token header or the "csrf" form field.
func (p *Portal) Authenticate(ctx *fasthttp.RequestCtx, allowOBF bool) (Principal, error) {
	return p.authenticate(ctx, allowOBF, func() []byte { return ctx.FormValue("csrf") })
}

// authenticate is Authenticate with the form's CSRF token fetched by
// formCSRF, which is called only for a cookie session's unsafe request that
// has no X-CSRF-Token header. A streamed multipart form cannot be read with
// ctx.FormValue: its page reads the token from the form's first part.
func (p *Portal) authenticate(ctx *fasthttp.RequestCtx, allowOBF bool, formCSRF func() []byte) (Principal, error) {
	now := p.now()
	if auth := string(ctx.Request.Header.Peek("Authorization")); auth != "" {
		key, ok := strings.CutPrefix(auth, "Bearer ")
		if !ok || key == "" {
			return Principal{}, errUnauthenticated
		}
		_, st, err := p.st.APIKeyByHash(ctx, sha(key))
		if errors.Is(err, store.ErrNotFound) {
			return Principal{}, apierr.New(http.StatusUnauthorized, "bad_api_key", "unknown or revoked API key")
		}
		if err != nil {
			return Principal{}, err
		}
		if st.DisabledAt != nil {
			return Principal{}, errDisabled
		}
		return Principal{Stakeholder: st, Via: "api-key"}, nil
	}
	if allowOBF && p.obfAuth != nil {
		if peer, err := p.obfAuth.Verify(ctx.TLSConnectionState()); err == nil {
			o, err := p.st.OBFBy(ctx, "client_cert_sha256", peer.SHA256[:])
			if err == nil && o.Trusted && o.DisabledAt == nil {
				st, err := p.st.StakeholderBy(ctx, "id", o.StakeholderID)
				if err != nil {
					return Principal{}, err
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
		return Principal{}, err
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

// NewAPIKey makes a key for the caller; the key is shown once.
func (p *Portal) NewAPIKey(ctx context.Context, who Principal, name string) (string, store.APIKey, error) {
	if who.Via == "obf" {
		return "", store.APIKey{}, errForbidden
	}
	name = strings.TrimSpace(name)
	if name == "" || len(name) > 100 {
		return "", store.APIKey{}, apierr.New(http.StatusBadRequest, "bad_name", "an API key needs a name of 1 to 100 characters")
	}
	key := "cfk_" + randomToken()
	k := store.APIKey{ID: uuid.NewString(), StakeholderID: who.Stakeholder.ID, Name: name, KeyHash: sha(key), CreatedAt: p.now()}
	if err := p.st.CreateAPIKey(ctx, k); err != nil {
		return "", k, err
	}
	_ = p.st.AppendAudit(ctx, store.AuditEvent{At: k.CreatedAt, Tenant: who.Stakeholder.Tenant(), Actor: who.actor(),
		Action: "api_key.create", Subject: k.ID, Detail: map[string]any{"name": name}})
	return key, k, nil
}

// APIKeys lists the caller's keys.
func (p *Portal) APIKeys(ctx context.Context, who Principal) ([]store.APIKey, error) {
	keys, err := p.st.APIKeys(ctx, who.Stakeholder.ID)
	return keys, err
}

// RevokeAPIKey revokes one of the caller's keys.
func (p *Portal) RevokeAPIKey(ctx context.Context, who Principal, id string) error {
	err := p.st.RevokeAPIKey(ctx, who.Stakeholder.ID, id, p.now())
	if errors.Is(err, store.ErrNotFound) {
		return apierr.New(http.StatusNotFound, "api_key_not_found", "no such API key")
	}
	if err == nil {
		_ = p.st.AppendAudit(ctx, store.AuditEvent{At: p.now(), Tenant: who.Stakeholder.Tenant(), Actor: who.actor(),
			Action: "api_key.revoke", Subject: id, Detail: map[string]any{}})
	}
	return err
}

// CreateStakeholder adds an account (the admin CLI, and sp-admins).
func (p *Portal) CreateStakeholder(ctx context.Context, name, role, password string, actsFor string) (store.Stakeholder, error) {
	name = strings.TrimSpace(name)
	if name == "" || len(name) > 100 {
		return store.Stakeholder{}, fmt.Errorf("a stakeholder needs a name of 1 to 100 characters")
	}
	hash, err := HashPassword(password)
	if err != nil {
		return store.Stakeholder{}, err
	}
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
