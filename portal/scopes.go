package portal

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/credfactory/credfactory/apierr"
	"github.com/credfactory/credfactory/store"
	"github.com/valyala/fasthttp"
)

// API key scopes: what a key may do within what its stakeholder's role
// allows. A browser session has every scope; a key has those it was made
// with. A key minted by a key has at most its minter's scopes, and needs
// ScopeKeys to be minted at all.
const (
	// ScopeRead: list and read devices and OBFs.
	ScopeRead = "read"
	// ScopeDevices: upload, hand over, release and revoke devices.
	ScopeDevices = "devices"
	// ScopeEnrol: nonces and enrolment tokens (claims included).
	ScopeEnrol = "enrol"
	// ScopeOBFs: register and disable on-boarding functions.
	ScopeOBFs = "obfs"
	// ScopeKeys: mint, list and revoke API keys.
	ScopeKeys = "keys"
	// ScopeMAF: register MAF clients (CSEs, Enrolment Targets) under the
	// tenant's adminFQDNs and de-register devices (docs/maf.md).
	ScopeMAF = "maf"
)

// AllScopes in display order.
var AllScopes = []string{ScopeRead, ScopeDevices, ScopeEnrol, ScopeOBFs, ScopeKeys, ScopeMAF}

// DefaultScopes are a new key's when none are asked for: what enrolment
// automation needs, never key or OBF management.
var DefaultScopes = []string{ScopeRead, ScopeDevices, ScopeEnrol}

// can reports whether the caller holds scope. Scopes limit keys only:
// sessions and OBFs are limited by role and route.
func (p Principal) can(scope string) bool {
	if p.Via != "api-key" {
		return true
	}
	return slices.Contains(p.Scopes, "*") || slices.Contains(p.Scopes, scope)
}

// RequireScope is requireScope for the routes other packages serve with
// the portal's authentication (the MAF's registration routes).
func RequireScope(who Principal, scope string) error { return requireScope(who, scope) }

// authenticateFor is an API route's caller, authenticated (no trusted OBF)
// and holding scope.
func (p *Portal) authenticateFor(ctx *fasthttp.RequestCtx, scope string) (Principal, error) {
	who, err := p.Authenticate(ctx, false)
	if err != nil {
		return Principal{}, err
	}
	return who, requireScope(who, scope)
}

func requireScope(who Principal, scope string) error {
	if who.can(scope) {
		return nil
	}
	return apierr.New(http.StatusForbidden, "scope_missing", fmt.Sprintf("this API key lacks the %q scope", scope))
}

// checkScopes validates requested scopes ("*" spelled out), sorted in
// AllScopes order, defaulting to DefaultScopes.
func checkScopes(requested []string) ([]string, error) {
	if len(requested) == 0 {
		return append([]string(nil), DefaultScopes...), nil
	}
	var out []string
	for _, s := range AllScopes {
		if slices.Contains(requested, s) {
			out = append(out, s)
		}
	}
	for _, s := range requested {
		if !slices.Contains(AllScopes, s) {
			return nil, apierr.New(http.StatusBadRequest, "bad_scope",
				fmt.Sprintf("unknown scope %q: scopes are %s", s, strings.Join(AllScopes, ", ")))
		}
	}
	return out, nil
}

// keyTouches remembers when each key's use was last written, so that a
// busy key is written at most once a minute per replica, and never on the
// request's own path.
type keyTouches struct {
	mu   sync.Mutex
	last map[string]time.Time
}

const touchEvery = time.Minute

// touch records that key k was used, in the background, if the registry's
// last_used_at (read with the key) and this replica's last write are both
// a minute old.
func (p *Portal) touch(k store.APIKey) {
	now := p.now()
	if k.LastUsedAt != nil && now.Sub(*k.LastUsedAt) < touchEvery {
		return
	}
	t := &p.touches
	t.mu.Lock()
	if t.last == nil {
		t.last = map[string]time.Time{}
	}
	if last, ok := t.last[k.ID]; ok && now.Sub(last) < touchEvery {
		t.mu.Unlock()
		return
	}
	t.last[k.ID] = now
	if len(t.last) > 100_000 { // forget old writes; the registry's value still gates
		for id, at := range t.last {
			if now.Sub(at) >= touchEvery {
				delete(t.last, id)
			}
		}
	}
	t.mu.Unlock()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.st.TouchAPIKey(ctx, k.ID, now); err != nil {
			// Best effort: the next use a minute on tries again.
			t.mu.Lock()
			delete(t.last, k.ID)
			t.mu.Unlock()
		}
	}()
}
