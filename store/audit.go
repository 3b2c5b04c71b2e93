package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// AuditEvent is one line of the audit trail: who did what to which subject.
type AuditEvent struct {
	ID      string
	At      time.Time
	Tenant  string
	Actor   string
	Action  string
	Subject string
	Detail  map[string]any
}

func insertAudit(ctx context.Context, q querier, e AuditEvent) error {
	s := auditStmt(e)
	_, err := q.exec(ctx, s.sql, s.args...)
	return err
}

// auditStmt is the insert of one audit event, for a pipelined batch.
func auditStmt(e AuditEvent) stmt {
	if e.ID == "" {
		e.ID = uuid.NewString()
	}
	detail, _ := json.Marshal(e.Detail) // maps of strings and numbers
	return stmt{`INSERT INTO audit_events (id, at, tenant, actor, action, subject, detail)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, []any{e.ID, e.At.UTC(), e.Tenant, e.Actor, e.Action, e.Subject, string(detail)}, 1}
}

// auditBySubject reads one subject's trail (audit_events_subject).
const auditBySubject = `SELECT id, at, tenant, actor, action, subject, detail FROM audit_events
	WHERE tenant = $1 AND subject = $2 ORDER BY at, id`

// Audit lists a tenant's events for a subject, oldest first.
func (s *Store) Audit(ctx context.Context, tenant, subject string) ([]AuditEvent, error) {
	out, err := list(ctx, s, func(r row) (e AuditEvent, err error) {
		var detail string
		if err = r.Scan(&e.ID, &e.At, &e.Tenant, &e.Actor, &e.Action, &e.Subject, &detail); err != nil {
			return e, err
		}
		return e, json.Unmarshal([]byte(detail), &e.Detail)
	}, auditBySubject, tenant, subject)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	return out, nil
}
