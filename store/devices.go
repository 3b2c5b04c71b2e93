package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Device states, as the portal shows them.
const (
	DevicePreEnrolled = "pre-enrolled"
	DeviceTokenIssued = "token-issued"
	DeviceEnrolled    = "enrolled"
	DeviceRevoked     = "revoked"
)

// Device is a pre-enrolled Enrollee.
type Device struct {
	ID             string
	ManufacturerID string
	OwnerID        *string
	// Tenant is who may see and enrol it: its owner once handed over, its
	// manufacturer before.
	Tenant           string
	ClaimCodeHash    []byte
	DeviceCertDER    []byte
	DeviceCertSHA256 []byte
	State            string
	AssignedID       *string
	// ClaimFailures counts wrong claim codes since its last successful
	// claim: the device's ceiling (store/claims.go), never a lock.
	ClaimFailures int
	// ReleasedAt is when its owner released it: set, the device (unowned
	// and pre-enrolled) may be claimed by proof of control.
	ReleasedAt *time.Time
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

const deviceColumns = `id, manufacturer_id, owner_id, tenant, claim_code_hash, device_cert_der, device_cert_sha256, state,
	assigned_id, claim_failures, released_at, created_at, updated_at`

func scanDevice(r row) (Device, error) {
	var d Device
	err := r.Scan(&d.ID, &d.ManufacturerID, &d.OwnerID, &d.Tenant, &d.ClaimCodeHash, &d.DeviceCertDER, &d.DeviceCertSHA256,
		&d.State, &d.AssignedID, &d.ClaimFailures, &d.ReleasedAt, &d.CreatedAt, &d.UpdatedAt)
	return d, err
}

// Upserted is the outcome of one row of a bulk pre-enrolment.
type Upserted int

// Row outcomes.
const (
	Inserted  Upserted = iota // new device
	Unchanged                 // this manufacturer uploaded it before: idempotent
	Taken                     // another manufacturer's device ID
)

// UpsertDevices pre-enrols devices for manufacturerID in chunks of one
// multi-row INSERT each, so 100,000 rows are a few hundred statements, and
// reports each row's outcome in order. Re-uploading a device is not an error
// and changes nothing.
func (s *Store) UpsertDevices(ctx context.Context, manufacturerID string, devices []Device, now time.Time) ([]Upserted, error) {
	out := make([]Upserted, len(devices))
	const chunk = 500
	for start := 0; start < len(devices); start += chunk {
		part := devices[start:min(start+chunk, len(devices))]
		err := s.tx(ctx, "upsert_devices", func(q querier) error {
			var b strings.Builder
			b.WriteString(`INSERT INTO devices (id, manufacturer_id, tenant, claim_code_hash, device_cert_der, device_cert_sha256,
				state, created_at, updated_at) VALUES `)
			args := make([]any, 0, len(part)*9)
			for i, d := range part {
				if i > 0 {
					b.WriteString(", ")
				}
				n := len(args)
				b.WriteString("(")
				for j := 1; j <= 9; j++ {
					if j > 1 {
						b.WriteString(", ")
					}
					b.WriteString("$" + strconv.Itoa(n+j))
				}
				b.WriteString(")")
				args = append(args, d.ID, manufacturerID, manufacturerID, d.ClaimCodeHash, d.DeviceCertDER, d.DeviceCertSHA256,
					DevicePreEnrolled, now.UTC(), now.UTC())
			}
			b.WriteString(` ON CONFLICT (id) DO NOTHING RETURNING id`)
			inserted := map[string]bool{}
			err := queryEach(ctx, q, b.String(), args, func(r rows) error {
				var id string
				err := r.Scan(&id)
				inserted[id] = true
				return err
			})
			if err != nil {
				return err
			}
			var existing []any
			for _, d := range part {
				if !inserted[d.ID] {
					existing = append(existing, d.ID)
				}
			}
			owners := map[string]string{}
			if len(existing) > 0 {
				if err := queryIn(ctx, q, `SELECT id, manufacturer_id FROM devices WHERE id IN `, existing, func(r rows) error {
					var id, m string
					if err := r.Scan(&id, &m); err != nil {
						return err
					}
					owners[id] = m
					return nil
				}); err != nil {
					return err
				}
			}
			for i, d := range part {
				switch {
				case inserted[d.ID]:
					out[start+i] = Inserted
				case owners[d.ID] == manufacturerID:
					out[start+i] = Unchanged
				default:
					out[start+i] = Taken
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("pre-enrol devices: %w", err)
		}
	}
	return out, nil
}

// DeviceFilter narrows a device listing.
type DeviceFilter struct {
	State    string // one of the Device* states, or "" for all
	IDPrefix string
	After    string // keyset cursor: the last ID of the previous page
	Limit    int
}

// Devices lists a tenant's devices in ID order, one page at a time. Keyset
// paging on the (tenant, id) and (tenant, state, id) indexes keeps every page
// as fast at a million devices as at ten.
func (s *Store) Devices(ctx context.Context, tenant string, f DeviceFilter) ([]Device, error) {
	where, args := `tenant = $1`, []any{tenant}
	if tenant == "" { // sp-admin: everyone's
		where, args = `1 = 1`, nil
	}
	if f.State != "" {
		args = append(args, f.State)
		where += ` AND state = $` + strconv.Itoa(len(args))
	}
	if f.IDPrefix != "" {
		// A range, not LIKE: it uses the index on every engine and needs no
		// escaping of % and _.
		args = append(args, f.IDPrefix, f.IDPrefix+"\U0010FFFF")
		where += ` AND id >= $` + strconv.Itoa(len(args)-1) + ` AND id < $` + strconv.Itoa(len(args))
	}
	if f.After != "" {
		args = append(args, f.After)
		where += ` AND id > $` + strconv.Itoa(len(args))
	}
	limit := f.Limit
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	out, err := list(ctx, s, scanDevice, `SELECT `+deviceColumns+` FROM devices WHERE `+where+` ORDER BY id LIMIT `+strconv.Itoa(limit), args...)
	if err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	return out, nil
}

// Device returns one device.
func (s *Store) Device(ctx context.Context, id string) (Device, error) {
	var d Device
	err := s.read(ctx, func(q querier) (err error) {
		d, err = scanDevice(q.queryRow(ctx, `SELECT `+deviceColumns+` FROM devices WHERE id = $1`, id))
		return err
	})
	if err != nil {
		return d, fmt.Errorf("device %s: %w", id, err)
	}
	return d, nil
}

// HandOver moves a manufacturer's pre-enrolled devices to a subscriber's
// tenant and returns how many moved; a device already handed over, another
// manufacturer's, or one with a token or credential is left alone.
func (s *Store) HandOver(ctx context.Context, manufacturerID, subscriberID string, deviceIDs []string, actor string, now time.Time) (int, error) {
	moved := 0
	err := s.tx(ctx, "hand_over", func(q querier) error {
		moved = 0
		var role string
		if err := q.queryRow(ctx, `SELECT role FROM stakeholders WHERE id = $1`, subscriberID).Scan(&role); err != nil {
			return fmt.Errorf("subscriber: %w", err)
		}
		if role != RoleSubscriber {
			return fmt.Errorf("devices are handed over to a subscriber, not a %s", role)
		}
		// Only pre-enrolled devices move: one with an open token or a
		// credential would carry the manufacturer's enrolment into the
		// subscriber's tenant. Pipelined: two round trips on PostgreSQL
		// whatever the number of devices.
		moves := make([]stmt, len(deviceIDs))
		for i, id := range deviceIDs {
			moves[i] = stmt{`UPDATE devices SET owner_id = $3, tenant = $3, updated_at = $4, released_at = NULL
				WHERE id = $1 AND manufacturer_id = $2 AND tenant = $2 AND state = 'pre-enrolled'`,
				[]any{id, manufacturerID, subscriberID, now.UTC()}, -1}
		}
		counts, err := q.execBatch(ctx, moves)
		if err != nil {
			return err
		}
		var audits []stmt
		for i, n := range counts {
			if n == 1 {
				moved++
				audits = append(audits, auditStmt(AuditEvent{At: now, Tenant: subscriberID, Actor: actor, Action: "device.hand_over",
					Subject: deviceIDs[i], Detail: map[string]any{"from": manufacturerID}}))
			}
		}
		return execBatch(ctx, q, audits)
	})
	return moved, err
}

// ErrTooManyNonces: the device has as many outstanding nonces, of other
// claimants, as it may hold.
var ErrTooManyNonces = errors.New("store: too many outstanding nonces for this device")

// SetNonce stores the hash of a proof-of-control nonce the claimant
// stakeholderID asked for. Each claimant holds at most one per device (a
// new one replaces its own earlier one, never another claimant's), and a
// device at most maxPerDevice live ones: past that the request is refused
// with ErrTooManyNonces rather than evicting someone's nonce. Expired
// nonces of the device are dropped on the way.
func (s *Store) SetNonce(ctx context.Context, deviceID, stakeholderID string, nonceHash []byte, expires, now time.Time, maxPerDevice int) error {
	err := s.tx(ctx, "set_nonce", func(q querier) error {
		var n int
		if err := q.queryRow(ctx, `SELECT COUNT(*) FROM devices WHERE id = $1`, deviceID).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return ErrNotFound
		}
		if _, err := q.execBatch(ctx, []stmt{
			{`DELETE FROM claim_nonces WHERE device_id = $1 AND (stakeholder_id = $2 OR expires_at <= $3)`, []any{deviceID, stakeholderID, now.UTC()}, -1},
		}); err != nil {
			return err
		}
		if err := q.queryRow(ctx, `SELECT COUNT(*) FROM claim_nonces WHERE device_id = $1`, deviceID).Scan(&n); err != nil {
			return err
		}
		if n >= maxPerDevice {
			return ErrTooManyNonces
		}
		_, err := q.exec(ctx, `INSERT INTO claim_nonces (nonce_hash, device_id, stakeholder_id, expires_at) VALUES ($1, $2, $3, $4)`,
			nonceHash, deviceID, stakeholderID, expires.UTC())
		return err
	})
	if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrTooManyNonces) {
		return fmt.Errorf("set nonce: %w", err)
	}
	return err
}

// TakeNonce consumes a nonce of the claimant stakeholderID for the device
// if it matches and has not expired: a nonce proves control once, and only
// for the claimant it was issued to.
func (s *Store) TakeNonce(ctx context.Context, deviceID, stakeholderID string, nonceHash []byte, now time.Time) (bool, error) {
	ok := false
	err := s.tx(ctx, "take_nonce", func(q querier) error {
		n, err := q.exec(ctx, `DELETE FROM claim_nonces
			WHERE nonce_hash = $1 AND device_id = $2 AND stakeholder_id = $3 AND expires_at > $4`, nonceHash, deviceID, stakeholderID, now.UTC())
		ok = n == 1
		return err
	})
	return ok, err
}
