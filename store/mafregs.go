package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// ErrNotOwned: the adminFQDN a registration names is not one the caller's
// tenant owns (TS-0003 §8.8: adminFQDN scopes a registration to one
// administrating stakeholder). Nothing was written.
var ErrNotOwned = errors.New("store: adminFQDN not owned by this tenant")

// MAFClient is a client registration with the MAF (TS-0003 §8.8): a CSE
// or Enrolment Target, known by its FQDN or CSE-ID, administered by the
// tenant that owns its adminFQDN. Its secret is stored as a SHA-256 only.
type MAFClient struct {
	// ID is the registration ID the MAF assigned.
	ID string
	// ClientID is the FQDN or CSE-ID the client is known by: the name a
	// credential's target IDs list.
	ClientID  string
	Tenant    string
	AdminFQDN string
	Labels    []string
	// SymmKeyID is the assignedSymmKeyID (a KmID, relative@MAF-FQDN).
	SymmKeyID    string
	SecretSHA256 []byte
	ExpiresAt    time.Time
	CreatedAt    time.Time
	UpdatedAt    time.Time

	// Read with the client: the administering stakeholder's state, which
	// every authentication checks.
	TenantRole     string
	TenantDisabled bool
}

// MAFKey is a symmetric key a MAF client registered (TS-0003 §8.8), kept
// sealed by the HSM's KEK (bound to its ID).
type MAFKey struct {
	// ID is the key ID, RelativeKeyID@MAF-FQDN.
	ID             string
	Tenant         string
	AdminFQDN      string
	RegistrationID string
	SUID           int
	TargetIDs      []string
	Labels         []string
	SealedKey      []byte
	ExpiresAt      time.Time
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

// AddAdminFQDN gives tenant an adminFQDN (the operator's act). Giving a
// tenant one it has is not an error; one another tenant has is ErrConflict.
func (s *Store) AddAdminFQDN(ctx context.Context, fqdn, tenant, actor string, now time.Time) error {
	err := s.tx(ctx, "add_admin_fqdn", func(q querier) error {
		var owner string
		err := q.queryRow(ctx, `SELECT tenant FROM maf_admin_fqdns WHERE fqdn = $1`, fqdn).Scan(&owner)
		switch {
		case err == nil && owner == tenant:
			return nil
		case err == nil:
			return fmt.Errorf("%w: adminFQDN %s belongs to another tenant", ErrConflict, fqdn)
		case !errors.Is(err, ErrNotFound):
			return err
		}
		if _, err := q.exec(ctx, `INSERT INTO maf_admin_fqdns (fqdn, tenant, created_at) VALUES ($1, $2, $3)`, fqdn, tenant, now.UTC()); err != nil {
			return err
		}
		return insertAudit(ctx, q, AuditEvent{At: now, Tenant: tenant, Actor: actor, Action: "maf.admin_fqdn.add", Subject: fqdn, Detail: map[string]any{}})
	})
	if err != nil {
		return fmt.Errorf("add adminFQDN %s: %w", fqdn, err)
	}
	return nil
}

// AdminFQDNs lists a tenant's adminFQDNs.
func (s *Store) AdminFQDNs(ctx context.Context, tenant string) ([]string, error) {
	return list(ctx, s, func(r row) (f string, err error) { err = r.Scan(&f); return f, err },
		`SELECT fqdn FROM maf_admin_fqdns WHERE tenant = $1 ORDER BY fqdn`, tenant)
}

// checkOwned is ErrNotOwned unless tenant owns fqdn, inside the writing
// transaction so an operator's change cannot slip between check and write.
func checkOwned(ctx context.Context, q querier, fqdn, tenant string) error {
	var owner string
	err := q.queryRow(ctx, `SELECT tenant FROM maf_admin_fqdns WHERE fqdn = $1`, fqdn).Scan(&owner)
	if errors.Is(err, ErrNotFound) || err == nil && owner != tenant {
		return ErrNotOwned
	}
	return err
}

func jsonList(v []string) (string, error) {
	if v == nil {
		v = []string{}
	}
	b, err := json.Marshal(v)
	return string(b), err
}

const mafClientColumns = `c.id, c.client_id, c.tenant, c.admin_fqdn, c.labels, c.symm_key_id, c.secret_sha256, c.expires_at,
	c.created_at, c.updated_at, st.role, st.disabled_at`

func scanMAFClient(r row) (MAFClient, error) {
	var c MAFClient
	var labels string
	var disabled *time.Time
	if err := r.Scan(&c.ID, &c.ClientID, &c.Tenant, &c.AdminFQDN, &labels, &c.SymmKeyID, &c.SecretSHA256, &c.ExpiresAt,
		&c.CreatedAt, &c.UpdatedAt, &c.TenantRole, &disabled); err != nil {
		return c, err
	}
	c.TenantDisabled = disabled != nil
	c.ExpiresAt, c.CreatedAt, c.UpdatedAt = c.ExpiresAt.UTC(), c.CreatedAt.UTC(), c.UpdatedAt.UTC()
	return c, json.Unmarshal([]byte(labels), &c.Labels)
}

// CreateMAFClient records a client registration. Its adminFQDN must be one
// its tenant owns (ErrNotOwned); a client ID or key ID that is registered
// already is ErrConflict.
func (s *Store) CreateMAFClient(ctx context.Context, c MAFClient, actor string) error {
	labels, err := jsonList(c.Labels)
	if err != nil {
		return err
	}
	err = s.tx(ctx, "create_maf_client", func(q querier) error {
		if err := checkOwned(ctx, q, c.AdminFQDN, c.Tenant); err != nil {
			return err
		}
		if _, err := q.exec(ctx, `INSERT INTO maf_clients (id, client_id, tenant, admin_fqdn, labels, symm_key_id, secret_sha256,
			expires_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)`,
			c.ID, c.ClientID, c.Tenant, c.AdminFQDN, labels, c.SymmKeyID, c.SecretSHA256, c.ExpiresAt.UTC(), c.CreatedAt.UTC()); err != nil {
			return err
		}
		return insertAudit(ctx, q, AuditEvent{At: c.CreatedAt, Tenant: c.Tenant, Actor: actor, Action: "maf.client.register", Subject: c.ID,
			Detail: map[string]any{"clientId": c.ClientID, "adminFqdn": c.AdminFQDN}})
	})
	if err != nil {
		return fmt.Errorf("register MAF client %s: %w", c.ClientID, err)
	}
	return nil
}

// MAFClientBy looks a client registration up by "id" or "symm_key_id".
func (s *Store) MAFClientBy(ctx context.Context, column, value string) (MAFClient, error) {
	if column != "id" && column != "symm_key_id" {
		return MAFClient{}, fmt.Errorf("MAF client lookup by %q", column)
	}
	var c MAFClient
	err := s.read(ctx, func(q querier) (err error) {
		c, err = scanMAFClient(q.queryRow(ctx, `SELECT `+mafClientColumns+` FROM maf_clients c
			JOIN stakeholders st ON st.id = c.tenant WHERE c.`+column+` = $1`, value))
		return err
	})
	if err != nil {
		return c, fmt.Errorf("MAF client: %w", err)
	}
	return c, nil
}

// MAFClients lists a tenant's client registrations, oldest first.
func (s *Store) MAFClients(ctx context.Context, tenant string) ([]MAFClient, error) {
	out, err := list(ctx, s, scanMAFClient, `SELECT `+mafClientColumns+` FROM maf_clients c
		JOIN stakeholders st ON st.id = c.tenant WHERE c.tenant = $1 ORDER BY c.created_at, c.id`, tenant)
	if err != nil {
		return nil, fmt.Errorf("list MAF clients: %w", err)
	}
	return out, nil
}

// UpdateMAFClient changes a tenant's client registration (TS-0003 §8.8
// registration update): labels and expiration, where given. Another
// tenant's registration is ErrNotFound.
func (s *Store) UpdateMAFClient(ctx context.Context, tenant, id string, labels []string, expires *time.Time, actor string, now time.Time) error {
	err := s.tx(ctx, "update_maf_client", func(q querier) error {
		if labels != nil {
			l, err := jsonList(labels)
			if err != nil {
				return err
			}
			if n, err := q.exec(ctx, `UPDATE maf_clients SET labels = $3, updated_at = $4 WHERE id = $1 AND tenant = $2`, id, tenant, l, now.UTC()); err != nil || n == 0 {
				return notFoundIfNone(n, err)
			}
		}
		if expires != nil {
			if n, err := q.exec(ctx, `UPDATE maf_clients SET expires_at = $3, updated_at = $4 WHERE id = $1 AND tenant = $2`, id, tenant, expires.UTC(), now.UTC()); err != nil || n == 0 {
				return notFoundIfNone(n, err)
			}
		}
		if labels == nil && expires == nil {
			var one int
			if err := q.queryRow(ctx, `SELECT 1 FROM maf_clients WHERE id = $1 AND tenant = $2`, id, tenant).Scan(&one); err != nil {
				return err
			}
		}
		return insertAudit(ctx, q, AuditEvent{At: now, Tenant: tenant, Actor: actor, Action: "maf.client.update", Subject: id, Detail: map[string]any{}})
	})
	if err != nil {
		return fmt.Errorf("update MAF client %s: %w", id, err)
	}
	return nil
}

func notFoundIfNone(n int64, err error) error {
	if err == nil && n == 0 {
		return ErrNotFound
	}
	return err
}

// DeleteMAFClient ends a tenant's client registration (TS-0003 §8.8
// de-registration) and deletes the keys it registered, in one transaction.
// It returns the deleted key IDs. Another tenant's registration is
// ErrNotFound.
func (s *Store) DeleteMAFClient(ctx context.Context, tenant, id, actor string, now time.Time) ([]string, error) {
	var keys []string
	err := s.tx(ctx, "delete_maf_client", func(q querier) error {
		keys = keys[:0]
		n, err := q.exec(ctx, `DELETE FROM maf_clients WHERE id = $1 AND tenant = $2`, id, tenant)
		if err := notFoundIfNone(n, err); err != nil {
			return err
		}
		err = queryEach(ctx, q, `DELETE FROM maf_keys WHERE registration_id = $1 RETURNING id`, []any{id}, func(r rows) error {
			var k string
			if err := r.Scan(&k); err != nil {
				return err
			}
			keys = append(keys, k)
			return nil
		})
		if err != nil {
			return err
		}
		return insertAudit(ctx, q, AuditEvent{At: now, Tenant: tenant, Actor: actor, Action: "maf.client.deregister", Subject: id,
			Detail: map[string]any{"deletedKeys": len(keys)}})
	})
	if err != nil {
		return nil, fmt.Errorf("de-register MAF client %s: %w", id, err)
	}
	return keys, nil
}

const mafKeyColumns = `id, tenant, admin_fqdn, registration_id, suid, target_ids, labels, sealed_key, expires_at, created_at, updated_at`

func scanMAFKey(r row) (MAFKey, error) {
	var k MAFKey
	var targets, labels string
	if err := r.Scan(&k.ID, &k.Tenant, &k.AdminFQDN, &k.RegistrationID, &k.SUID, &targets, &labels, &k.SealedKey,
		&k.ExpiresAt, &k.CreatedAt, &k.UpdatedAt); err != nil {
		return k, err
	}
	k.ExpiresAt, k.CreatedAt, k.UpdatedAt = k.ExpiresAt.UTC(), k.CreatedAt.UTC(), k.UpdatedAt.UTC()
	if err := json.Unmarshal([]byte(targets), &k.TargetIDs); err != nil {
		return k, err
	}
	return k, json.Unmarshal([]byte(labels), &k.Labels)
}

// CreateMAFKey records a registered key. Its adminFQDN must be one the
// tenant owns (ErrNotOwned), and its registering client must still be
// registered (ErrNotFound).
func (s *Store) CreateMAFKey(ctx context.Context, k MAFKey, actor string) error {
	targets, err := jsonList(k.TargetIDs)
	if err != nil {
		return err
	}
	labels, err := jsonList(k.Labels)
	if err != nil {
		return err
	}
	err = s.tx(ctx, "create_maf_key", func(q querier) error {
		if err := checkOwned(ctx, q, k.AdminFQDN, k.Tenant); err != nil {
			return err
		}
		// Written, not only read: a concurrent de-registration of the
		// client meets this transaction on its row, so no key outlives
		// the client that registered it.
		if n, err := q.exec(ctx, `UPDATE maf_clients SET updated_at = updated_at WHERE id = $1 AND tenant = $2`, k.RegistrationID, k.Tenant); err != nil || n == 0 {
			return notFoundIfNone(n, err)
		}
		if _, err := q.exec(ctx, `INSERT INTO maf_keys (`+mafKeyColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)`,
			k.ID, k.Tenant, k.AdminFQDN, k.RegistrationID, k.SUID, targets, labels, k.SealedKey, k.ExpiresAt.UTC(), k.CreatedAt.UTC()); err != nil {
			return err
		}
		return insertAudit(ctx, q, AuditEvent{At: k.CreatedAt, Tenant: k.Tenant, Actor: actor, Action: "maf.key.register", Subject: k.ID,
			Detail: map[string]any{"suid": k.SUID, "adminFqdn": k.AdminFQDN}})
	})
	if err != nil {
		return fmt.Errorf("register key %s: %w", k.ID, err)
	}
	return nil
}

// MAFKeyByID returns a registered key.
func (s *Store) MAFKeyByID(ctx context.Context, id string) (MAFKey, error) {
	var k MAFKey
	err := s.read(ctx, func(q querier) (err error) {
		k, err = scanMAFKey(q.queryRow(ctx, `SELECT `+mafKeyColumns+` FROM maf_keys WHERE id = $1`, id))
		return err
	})
	if err != nil {
		return k, fmt.Errorf("registered key: %w", err)
	}
	return k, nil
}

// MAFKeyUpdate is a key update (TS-0003 §8.8): the fields given change.
type MAFKeyUpdate struct {
	Labels    []string
	TargetIDs []string
	ExpiresAt *time.Time
}

// UpdateMAFKey changes a key its registering client holds; another
// client's key is ErrNotFound.
func (s *Store) UpdateMAFKey(ctx context.Context, registrationID, tenant, id string, u MAFKeyUpdate, actor string, now time.Time) error {
	err := s.tx(ctx, "update_maf_key", func(q querier) error {
		set := func(col string, v any) error {
			n, err := q.exec(ctx, `UPDATE maf_keys SET `+col+` = $3, updated_at = $4 WHERE id = $1 AND registration_id = $2`, id, registrationID, v, now.UTC())
			return notFoundIfNone(n, err)
		}
		if u.Labels != nil {
			l, err := jsonList(u.Labels)
			if err == nil {
				err = set("labels", l)
			}
			if err != nil {
				return err
			}
		}
		if u.TargetIDs != nil {
			l, err := jsonList(u.TargetIDs)
			if err == nil {
				err = set("target_ids", l)
			}
			if err != nil {
				return err
			}
		}
		if u.ExpiresAt != nil {
			if err := set("expires_at", u.ExpiresAt.UTC()); err != nil {
				return err
			}
		}
		var one int
		if err := q.queryRow(ctx, `SELECT 1 FROM maf_keys WHERE id = $1 AND registration_id = $2`, id, registrationID).Scan(&one); err != nil {
			return err
		}
		return insertAudit(ctx, q, AuditEvent{At: now, Tenant: tenant, Actor: actor, Action: "maf.key.update", Subject: id, Detail: map[string]any{}})
	})
	if err != nil {
		return fmt.Errorf("update key %s: %w", id, err)
	}
	return nil
}

// DeleteMAFKey de-registers a key its registering client holds; another
// client's key is ErrNotFound.
func (s *Store) DeleteMAFKey(ctx context.Context, registrationID, tenant, id, actor string, now time.Time) error {
	err := s.tx(ctx, "delete_maf_key", func(q querier) error {
		n, err := q.exec(ctx, `DELETE FROM maf_keys WHERE id = $1 AND registration_id = $2`, id, registrationID)
		if err := notFoundIfNone(n, err); err != nil {
			return err
		}
		return insertAudit(ctx, q, AuditEvent{At: now, Tenant: tenant, Actor: actor, Action: "maf.key.deregister", Subject: id, Detail: map[string]any{}})
	})
	if err != nil {
		return fmt.Errorf("de-register key %s: %w", id, err)
	}
	return nil
}
