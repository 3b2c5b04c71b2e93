package store

import (
	"context"
	"fmt"
	"time"
)

// OBF kinds (DESIGN.md "Roles").
const (
	OBD = "obd" // on-boarding device: a phone, a technician's tool
	OBS = "obs" // on-boarding server: a factory line
)

// OBF is a registered on-boarding function.
type OBF struct {
	ID            string
	StakeholderID string
	Name          string
	Kind          string
	Trusted       bool
	// ClientCertSHA256/DER: the mTLS certificate a trusted OBF forwards
	// with; SubCADER: an OBS's name-constrained sub-CA.
	ClientCertSHA256 []byte
	ClientCertDER    []byte
	SubCADER         []byte
	CreatedAt        time.Time
	DisabledAt       *time.Time
}

const obfColumns = `id, stakeholder_id, name, kind, trusted, client_cert_sha256, client_cert_der, subca_der, created_at, disabled_at`

func scanOBF(r row) (OBF, error) {
	var o OBF
	err := r.Scan(&o.ID, &o.StakeholderID, &o.Name, &o.Kind, &o.Trusted, &o.ClientCertSHA256, &o.ClientCertDER, &o.SubCADER,
		&o.CreatedAt, &o.DisabledAt)
	return o, err
}

// CreateOBF registers an OBF with its certificates, recording who did it.
func (s *Store) CreateOBF(ctx context.Context, o OBF, actor string) error {
	if o.Kind != OBD && o.Kind != OBS {
		return fmt.Errorf("create OBF: kind %q", o.Kind)
	}
	certs, err := obfCertRows(o)
	if err != nil {
		return fmt.Errorf("create OBF: %w", err)
	}
	err = s.tx(ctx, "create_obf", func(q querier) error {
		if err := insertOBFCerts(ctx, q, o.ID, certs, nil, nil); err != nil {
			return err
		}
		if _, err := q.exec(ctx, `INSERT INTO obfs (`+obfColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL)`,
			o.ID, o.StakeholderID, o.Name, o.Kind, o.Trusted, o.ClientCertSHA256, o.ClientCertDER, o.SubCADER, o.CreatedAt.UTC()); err != nil {
			return err
		}
		return insertAudit(ctx, q, AuditEvent{At: o.CreatedAt, Tenant: o.StakeholderID, Actor: actor, Action: "obf.register",
			Subject: o.ID, Detail: map[string]any{"name": o.Name, "kind": o.Kind, "trusted": o.Trusted}})
	})
	if err != nil {
		return fmt.Errorf("create OBF: %w", err)
	}
	return nil
}

// OBFBy looks an OBF up by "id" or "client_cert_sha256".
func (s *Store) OBFBy(ctx context.Context, column string, value any) (OBF, error) {
	if column != "id" && column != "client_cert_sha256" {
		return OBF{}, fmt.Errorf("OBF lookup by %q", column)
	}
	var o OBF
	err := s.read(ctx, func(q querier) (err error) {
		o, err = scanOBF(q.queryRow(ctx, `SELECT `+obfColumns+` FROM obfs WHERE `+column+` = $1`, value))
		return err
	})
	if err != nil {
		return o, fmt.Errorf("OBF: %w", err)
	}
	return o, nil
}

// OBFs lists the OBFs owned by stakeholderID, or every OBF for "".
func (s *Store) OBFs(ctx context.Context, stakeholderID string) ([]OBF, error) {
	where, args := ``, []any(nil)
	if stakeholderID != "" {
		where, args = `WHERE stakeholder_id = $1`, []any{stakeholderID}
	}
	return list(ctx, s, scanOBF, `SELECT `+obfColumns+` FROM obfs `+where+` ORDER BY name, id`, args...)
}

// DisableOBF stops an OBF: it can no longer forward, vouch, or be chosen
// for an enrolment, and its certificates are revoked in the same
// transaction (reason: RFC 5280 CRLReason), so the OBF CA's next CRL and
// every OCSP answer from now on list them.
func (s *Store) DisableOBF(ctx context.Context, id, actor string, now time.Time, reason int) error {
	return s.tx(ctx, "disable_obf", func(q querier) error {
		var owner string
		if err := q.queryRow(ctx, `SELECT stakeholder_id FROM obfs WHERE id = $1`, id).Scan(&owner); err != nil {
			return err
		}
		if _, err := q.exec(ctx, `UPDATE obfs SET disabled_at = $2 WHERE id = $1 AND disabled_at IS NULL`, id, now.UTC()); err != nil {
			return err
		}
		if err := revokeOBFCerts(ctx, q, id, now, reason); err != nil {
			return err
		}
		return insertAudit(ctx, q, AuditEvent{At: now, Tenant: owner, Actor: actor, Action: "obf.disable", Subject: id, Detail: map[string]any{}})
	})
}
