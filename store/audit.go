package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
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
		e.ID = uuid.Must(uuid.NewV7()).String()
	}
	detail, _ := json.Marshal(e.Detail) // maps of strings and numbers
	return stmt{`INSERT INTO audit_events (id, at, tenant, actor, action, subject, detail)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, []any{e.ID, e.At.UTC(), e.Tenant, e.Actor, e.Action, e.Subject, string(detail)}, 1}
}

// auditQuery reads the trails of n subjects over audit_events_subject.
// The tenant is filtered after the read (AuditOf): with it in the WHERE,
// SQLite's planner picks the (tenant, at) index for the ORDER BY and scans
// the tenant's whole trail; a subject's events are few.
func auditQuery(n int) string {
	var b strings.Builder
	b.WriteString(`SELECT id, at, tenant, actor, action, subject, detail FROM audit_events WHERE subject IN (`)
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "$%d", i+1)
	}
	b.WriteString(") ORDER BY at, id")
	return b.String()
}

// Audit lists a tenant's events for a subject, oldest first.
func (s *Store) Audit(ctx context.Context, tenant, subject string) ([]AuditEvent, error) {
	return s.AuditOf(ctx, tenant, []string{subject})
}

// AuditOf lists the events of several subjects (a device and its
// credentials: revocations and renewals are filed under the credential),
// of one tenant or, for "", of every tenant, oldest first.
func (s *Store) AuditOf(ctx context.Context, tenant string, subjects []string) ([]AuditEvent, error) {
	if len(subjects) == 0 {
		return nil, nil
	}
	args := make([]any, 0, len(subjects))
	for _, sub := range subjects {
		args = append(args, sub)
	}
	all, err := list(ctx, s, func(r row) (e AuditEvent, err error) {
		var detail string
		if err = r.Scan(&e.ID, &e.At, &e.Tenant, &e.Actor, &e.Action, &e.Subject, &detail); err != nil {
			return e, err
		}
		return e, json.Unmarshal([]byte(detail), &e.Detail)
	}, auditQuery(len(subjects)), args...)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	if tenant == "" {
		return all, nil
	}
	out := all[:0]
	for _, e := range all {
		if e.Tenant == tenant {
			out = append(out, e)
		}
	}
	return out, nil
}
