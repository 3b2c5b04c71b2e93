package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Node-IDs (TS-0001 §7.1.5; docs/onem2m.md "Certificate names"): the
// M2M-Node-ID an Enrolling Stakeholder binds to a device, which a Node-ID
// certificate (TS-0003 §10.1.1.8) then names. One Node-ID names one node
// of the SP: the devices_node_id unique index makes that a database fact,
// across tenants.

var (
	// ErrNodeIDTaken: another device of the SP holds the Node-ID. The
	// error names neither that device nor its tenant.
	ErrNodeIDTaken = errors.New("store: the Node-ID is bound to another device")
	// ErrNodeIDInUse: the device's Node-ID cannot change now: an active
	// Node-ID certificate names it, or an open enrolment token may be
	// redeemed for one.
	ErrNodeIDInUse = errors.New("store: the device's Node-ID is in use")
)

// NodeIDChange binds, changes or clears a device's Node-ID.
type NodeIDChange struct {
	// DeviceID is the registry's key of the device (Device.ID).
	DeviceID string
	// Tenant is the caller's; "" (an sp-admin) is unscoped. A device of
	// another tenant is ErrNotFound, as one that does not exist.
	Tenant string
	// NodeID is the canonical Node-ID (package nodeid); "" clears it.
	NodeID string
	Actor  string
	Now    time.Time
}

// SetNodeID applies ch in one transaction and returns the device as it
// is now. Binding a Node-ID to a device that has none is always allowed
// (no Node-ID certificate can exist for it); changing or clearing one is
// refused (ErrNodeIDInUse) while an active Node-ID certificate names it or
// an open token could still be redeemed for one, so a certificate never
// names a Node-ID its device no longer holds, and the Node-ID never
// passes to another device while a certificate for it is current. Setting
// the Node-ID the device already has changes nothing and writes no audit
// event.
func (s *Store) SetNodeID(ctx context.Context, ch NodeIDChange) (Device, error) {
	var out Device
	err := s.tx(ctx, "set_node_id", func(q querier) error {
		d, err := scanDevice(q.queryRow(ctx, `SELECT `+deviceColumns+` FROM devices WHERE id = $1`, ch.DeviceID))
		if err != nil {
			return err
		}
		if ch.Tenant != "" && d.Tenant != ch.Tenant {
			return ErrNotFound
		}
		out = d
		if d.NodeID != nil && *d.NodeID == ch.NodeID || d.NodeID == nil && ch.NodeID == "" {
			return nil
		}
		if d.NodeID != nil {
			var certs, tokens int
			if err := q.queryRow(ctx, `SELECT COUNT(*) FROM credentials WHERE device_id = $1 AND status = 'active' AND id LIKE '34-%'`,
				d.ID).Scan(&certs); err != nil {
				return err
			}
			// Any token still 'issued' counts, expired or not: an
			// enrolment that read the Node-ID just before its token
			// expired may still be signing, and it redeems against the
			// time it read (Redeem checks the state, not this clock).
			// Once the sweep marks the token expired no redemption can
			// use it.
			if err := q.queryRow(ctx, `SELECT COUNT(*) FROM enrolments WHERE device_id = $1 AND state = 'issued'`,
				d.ID).Scan(&tokens); err != nil {
				return err
			}
			if certs+tokens > 0 {
				return fmt.Errorf("%w: %d active Node-ID certificate(s), %d open enrolment token(s)", ErrNodeIDInUse, certs, tokens)
			}
		}
		var value any
		if ch.NodeID != "" {
			value = ch.NodeID
			var other string
			switch err := q.queryRow(ctx, `SELECT id FROM devices WHERE node_id = $1`, ch.NodeID).Scan(&other); {
			case err == nil:
				return ErrNodeIDTaken
			case !errors.Is(err, ErrNotFound):
				return err
			}
		}
		if _, err := q.exec(ctx, `UPDATE devices SET node_id = $2, updated_at = $3 WHERE id = $1`, d.ID, value, ch.Now.UTC()); err != nil {
			return err
		}
		action, detail := "device.node_id_set", map[string]any{"nodeId": ch.NodeID}
		if ch.NodeID == "" {
			action, detail = "device.node_id_cleared", map[string]any{"nodeId": *d.NodeID}
		}
		if err := insertAudit(ctx, q, AuditEvent{At: ch.Now, Tenant: d.Tenant, Actor: ch.Actor, Action: action, Subject: d.ID, Detail: detail}); err != nil {
			return err
		}
		out.NodeID, out.UpdatedAt = nil, ch.Now.UTC()
		if ch.NodeID != "" {
			out.NodeID = &ch.NodeID
		}
		return nil
	})
	switch {
	case errors.Is(err, ErrConflict):
		// The unique index: a concurrent binding of the same Node-ID won.
		return Device{}, ErrNodeIDTaken
	case err != nil:
		return Device{}, fmt.Errorf("set node ID of %s: %w", ch.DeviceID, err)
	}
	return out, nil
}
