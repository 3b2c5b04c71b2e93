package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Stakeholder roles (docs/architecture.md "Who uses it"). An installer acts
// for a subscriber: it works in the subscriber's tenant.
const (
	RoleSPAdmin      = "sp-admin"
	RoleManufacturer = "manufacturer"
	RoleSubscriber   = "subscriber"
	RoleInstaller    = "installer"
)

// Stakeholder is a portal account and, through Tenant, the scope of every
// device it may see.
type Stakeholder struct {
	ID           string
	Name         string
	Role         string
	ActsFor      *string
	PasswordHash string
	CreatedAt    time.Time
	DisabledAt   *time.Time
}

// Tenant is the stakeholder whose devices this one works on: itself, or
// the subscriber an installer acts for.
func (s Stakeholder) Tenant() string {
	if s.ActsFor != nil {
		return *s.ActsFor
	}
	return s.ID
}

// stakeholderColumns: failed_logins and locked_until (migration 1) are no
// longer read or written: logins are slowed in memory (portal's login
// backoff), never locked in the registry. A later migration drops them once
// no replica of a release that reads them can still be serving.
const stakeholderColumns = `id, name, role, acts_for, password_hash, created_at, disabled_at`

func scanStakeholder(r row) (Stakeholder, error) {
	var s Stakeholder
	err := r.Scan(stakeholderDest(&s)...)
	return s, err
}

// stakeholderDest is where stakeholderColumns scan to, so a join can read
// a stakeholder in the same row as what refers to it.
func stakeholderDest(s *Stakeholder) []any {
	return []any{&s.ID, &s.Name, &s.Role, &s.ActsFor, &s.PasswordHash, &s.CreatedAt, &s.DisabledAt}
}

// stakeholderColumnsOf is stakeholderColumns qualified by a table alias.
func stakeholderColumnsOf(alias string) string {
	cols := strings.Split(stakeholderColumns, ", ")
	for i := range cols {
		cols[i] = alias + "." + cols[i]
	}
	return strings.Join(cols, ", ")
}

// The session and API-key lookups, built once: each runs per request.
var (
	sessionByHashSQL = `SELECT s.id_hash, s.stakeholder_id, s.csrf, s.created_at, s.expires_at, ` + stakeholderColumnsOf("st") + `
		FROM sessions s JOIN stakeholders st ON st.id = s.stakeholder_id WHERE s.id_hash = $1`
	apiKeyByHashSQL = `SELECT ` + apiKeyColumnsOf("k") + `, ` + stakeholderColumnsOf("st") + `
		FROM api_keys k JOIN stakeholders st ON st.id = k.stakeholder_id WHERE k.key_hash = $1 AND k.revoked_at IS NULL`
)

// CreateStakeholder adds an account; a taken name is ErrConflict.
func (s *Store) CreateStakeholder(ctx context.Context, st Stakeholder) error {
	switch st.Role {
	case RoleSPAdmin, RoleManufacturer, RoleSubscriber:
		if st.ActsFor != nil {
			return fmt.Errorf("create stakeholder: only an installer acts for another")
		}
	case RoleInstaller:
		if st.ActsFor == nil {
			return fmt.Errorf("create stakeholder: an installer acts for a subscriber")
		}
	default:
		return fmt.Errorf("create stakeholder: unknown role %q", st.Role)
	}
	err := s.tx(ctx, "create_stakeholder", func(q querier) error {
		if st.ActsFor != nil {
			var role string
			if err := q.queryRow(ctx, `SELECT role FROM stakeholders WHERE id = $1`, *st.ActsFor).Scan(&role); err != nil {
				return fmt.Errorf("the subscriber an installer acts for: %w", err)
			}
			if role != RoleSubscriber {
				return fmt.Errorf("an installer acts for a subscriber, not a %s", role)
			}
		}
		_, err := q.exec(ctx, `INSERT INTO stakeholders (id, name, role, acts_for, password_hash, created_at)
			VALUES ($1, $2, $3, $4, $5, $6)`, st.ID, st.Name, st.Role, st.ActsFor, st.PasswordHash, st.CreatedAt.UTC())
		return err
	})
	if err != nil {
		return fmt.Errorf("create stakeholder %q: %w", st.Name, err)
	}
	return nil
}

// StakeholderBy looks an account up by "id" or "name".
func (s *Store) StakeholderBy(ctx context.Context, column, value string) (Stakeholder, error) {
	if column != "id" && column != "name" {
		return Stakeholder{}, fmt.Errorf("stakeholder lookup by %q", column)
	}
	var st Stakeholder
	err := s.read(ctx, func(q querier) (err error) {
		st, err = scanStakeholder(q.queryRow(ctx, `SELECT `+stakeholderColumns+` FROM stakeholders WHERE `+column+` = $1`, value))
		return err
	})
	if err != nil {
		return st, fmt.Errorf("stakeholder: %w", err)
	}
	return st, nil
}

// ErrClaimLocked: too many wrong claim codes by this account (or from this
// source); try later.
var ErrClaimLocked = errors.New("store: too many wrong claim codes; try later")

// Session is a logged-in browser, found by the SHA-256 of its cookie.
type Session struct {
	IDHash        []byte
	StakeholderID string
	CSRF          string
	CreatedAt     time.Time
	ExpiresAt     time.Time
}

// CreateSession stores a session.
func (s *Store) CreateSession(ctx context.Context, sess Session) error {
	return s.tx(ctx, "create_session", func(q querier) error {
		_, err := q.exec(ctx, `INSERT INTO sessions (id_hash, stakeholder_id, csrf, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)`,
			sess.IDHash, sess.StakeholderID, sess.CSRF, sess.CreatedAt.UTC(), sess.ExpiresAt.UTC())
		return err
	})
}

// SessionByHash returns a session and its stakeholder; an expired session
// is ErrNotFound.
func (s *Store) SessionByHash(ctx context.Context, idHash []byte, now time.Time) (Session, Stakeholder, error) {
	var sess Session
	var st Stakeholder
	// One round trip for the session and its stakeholder: this runs on
	// every page a logged-in stakeholder loads.
	err := s.read(ctx, func(q querier) error {
		dest := append([]any{&sess.IDHash, &sess.StakeholderID, &sess.CSRF, &sess.CreatedAt, &sess.ExpiresAt}, stakeholderDest(&st)...)
		if err := q.queryRow(ctx, sessionByHashSQL, idHash).Scan(dest...); err != nil {
			return err
		}
		if !now.Before(sess.ExpiresAt) {
			return ErrNotFound
		}
		return nil
	})
	return sess, st, err
}

// DeleteSession ends a session (logout).
func (s *Store) DeleteSession(ctx context.Context, idHash []byte) error {
	return s.tx(ctx, "delete_session", func(q querier) error {
		_, err := q.exec(ctx, `DELETE FROM sessions WHERE id_hash = $1`, idHash)
		return err
	})
}

// APIKey is a machine client's credential, stored by its SHA-256 only.
type APIKey struct {
	ID            string
	StakeholderID string
	Name          string
	KeyHash       []byte
	CreatedAt     time.Time
	LastUsedAt    *time.Time
	RevokedAt     *time.Time
	// Scopes are what the key may do, space-separated in the registry;
	// "*" is every scope (keys made before scopes existed).
	Scopes []string
	// CreatedBy says who made the key ("session:alice", "api-key:<id>",
	// "admin-cli"); ParentKeyID is the key that minted it, if one did.
	CreatedBy   string
	ParentKeyID *string
}

const apiKeyColumns = "id, stakeholder_id, name, key_hash, created_at, last_used_at, revoked_at, scopes, created_by, parent_key_id"

func apiKeyColumnsOf(alias string) string {
	cols := strings.Split(apiKeyColumns, ", ")
	for i := range cols {
		cols[i] = alias + "." + cols[i]
	}
	return strings.Join(cols, ", ")
}

// apiKeyScan scans apiKeyColumns; finish turns the scopes text into Scopes.
func apiKeyDest(k *APIKey, scopes *string) []any {
	return []any{&k.ID, &k.StakeholderID, &k.Name, &k.KeyHash, &k.CreatedAt, &k.LastUsedAt, &k.RevokedAt, scopes, &k.CreatedBy, &k.ParentKeyID}
}

func splitScopes(s string) []string { return strings.Fields(s) }

// CreateAPIKey stores a key's hash. A key minted by another
// (ParentKeyID) is refused if that key has been revoked meanwhile.
func (s *Store) CreateAPIKey(ctx context.Context, k APIKey) error {
	return s.tx(ctx, "create_api_key", func(q querier) error {
		if k.ParentKeyID != nil {
			var revoked *time.Time
			if err := q.queryRow(ctx, `SELECT revoked_at FROM api_keys WHERE id = $1`, *k.ParentKeyID).Scan(&revoked); err != nil {
				return fmt.Errorf("the minting key: %w", err)
			}
			if revoked != nil {
				return fmt.Errorf("the minting key is revoked: %w", ErrNotFound)
			}
		}
		_, err := q.exec(ctx, `INSERT INTO api_keys (id, stakeholder_id, name, key_hash, created_at, scopes, created_by, parent_key_id)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
			k.ID, k.StakeholderID, k.Name, k.KeyHash, k.CreatedAt.UTC(), strings.Join(k.Scopes, " "), k.CreatedBy, k.ParentKeyID)
		return err
	})
}

// APIKeyByHash returns an unrevoked key and its stakeholder.
func (s *Store) APIKeyByHash(ctx context.Context, keyHash []byte) (APIKey, Stakeholder, error) {
	var k APIKey
	var st Stakeholder
	var scopes string
	// One round trip for the key and its stakeholder: this runs on every
	// API request a factory line makes.
	err := s.read(ctx, func(q querier) error {
		dest := append(apiKeyDest(&k, &scopes), stakeholderDest(&st)...)
		return q.queryRow(ctx, apiKeyByHashSQL, keyHash).Scan(dest...)
	})
	k.Scopes = splitScopes(scopes)
	return k, st, err
}

// APIKeys lists a stakeholder's keys (hashes included, never the keys).
func (s *Store) APIKeys(ctx context.Context, stakeholderID string) ([]APIKey, error) {
	return list(ctx, s, func(r row) (k APIKey, err error) {
		var scopes string
		err = r.Scan(apiKeyDest(&k, &scopes)...)
		k.Scopes = splitScopes(scopes)
		return k, err
	}, `SELECT `+apiKeyColumns+` FROM api_keys WHERE stakeholder_id = $1 ORDER BY created_at, id`, stakeholderID)
}

// TouchAPIKey records a key's use at now, unless a use within the last
// minute is recorded already: a busy key costs one write a minute, not one
// per request.
func (s *Store) TouchAPIKey(ctx context.Context, id string, now time.Time) error {
	return s.tx(ctx, "touch_api_key", func(q querier) error {
		_, err := q.exec(ctx, `UPDATE api_keys SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $3)`,
			id, now.UTC(), now.Add(-time.Minute).UTC())
		return err
	})
}

// RevokeAPIKey revokes a stakeholder's key and every key minted from it,
// directly or through others; another's key is ErrNotFound. It returns the
// IDs revoked, the named key first.
func (s *Store) RevokeAPIKey(ctx context.Context, stakeholderID, id string, now time.Time) ([]string, error) {
	var revoked []string
	err := s.tx(ctx, "revoke_api_key", func(q querier) error {
		revoked = revoked[:0]
		n, err := q.exec(ctx, `UPDATE api_keys SET revoked_at = $3 WHERE id = $1 AND stakeholder_id = $2 AND revoked_at IS NULL`,
			id, stakeholderID, now.UTC())
		if err != nil {
			return err
		}
		if n == 0 {
			return ErrNotFound
		}
		revoked = append(revoked, id)
		// Breadth first down the minting tree; a key's offspring are its
		// stakeholder's (a key mints only for its own stakeholder).
		for frontier := []string{id}; len(frontier) > 0; {
			var next []string
			for _, parent := range frontier {
				err := queryEach(ctx, q, `SELECT id FROM api_keys WHERE parent_key_id = $1 AND revoked_at IS NULL`, []any{parent}, func(r rows) error {
					var child string
					if err := r.Scan(&child); err != nil {
						return err
					}
					next = append(next, child)
					return nil
				})
				if err != nil {
					return err
				}
			}
			for _, child := range next {
				if _, err := q.exec(ctx, `UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL`, child, now.UTC()); err != nil {
					return err
				}
			}
			revoked = append(revoked, next...)
			frontier = next
		}
		return nil
	})
	return revoked, err
}

// AppendAudit records one audit event on its own.
func (s *Store) AppendAudit(ctx context.Context, e AuditEvent) error {
	return s.tx(ctx, "audit", func(q querier) error { return insertAudit(ctx, q, e) })
}

// DisableStakeholder disables an account: its sessions and API keys stop
// working at once (every authentication checks it).
func (s *Store) DisableStakeholder(ctx context.Context, id, actor string, now time.Time) error {
	return s.tx(ctx, "disable_stakeholder", func(q querier) error {
		n, err := q.exec(ctx, `UPDATE stakeholders SET disabled_at = $2 WHERE id = $1 AND disabled_at IS NULL`, id, now.UTC())
		if err != nil {
			return err
		}
		if n == 0 {
			return ErrNotFound
		}
		if _, err := q.exec(ctx, `DELETE FROM sessions WHERE stakeholder_id = $1`, id); err != nil {
			return err
		}
		return insertAudit(ctx, q, AuditEvent{At: now, Tenant: id, Actor: actor, Action: "stakeholder.disable", Subject: id, Detail: map[string]any{}})
	})
}
