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
	// ID is the registry's key for the device, what enrolments,
	// credentials and the audit trail name: the manufacturer's device ID,
	// or, for a second manufacturer's device of an ID already taken,
	// ManufacturerID "/" device ID (UpsertDevices).
	ID string
	// DeviceID is the manufacturer's ID for the device (its label), unique
	// per manufacturer: the name the API and the pages use.
	DeviceID       string
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
	// NodeID is the M2M-Node-ID bound to it (nodeids.go), canonical.
	NodeID    *string
	CreatedAt time.Time
	UpdatedAt time.Time
}

// deviceColumns: a row written by a replica of the previous release during
// a rolling upgrade has no device_id yet; its key is its device ID.
const deviceColumns = `id, COALESCE(device_id, id), manufacturer_id, owner_id, tenant, claim_code_hash, device_cert_der, device_cert_sha256, state,
	assigned_id, claim_failures, released_at, node_id, created_at, updated_at`

func scanDevice(r row) (Device, error) {
	var d Device
	err := r.Scan(&d.ID, &d.DeviceID, &d.ManufacturerID, &d.OwnerID, &d.Tenant, &d.ClaimCodeHash, &d.DeviceCertDER, &d.DeviceCertSHA256,
		&d.State, &d.AssignedID, &d.ClaimFailures, &d.ReleasedAt, &d.NodeID, &d.CreatedAt, &d.UpdatedAt)
	return d, err
}

// Ref names the device unambiguously for the API and the pages: device ID
// "@" manufacturer ID ('@' is never part of a device ID).
func (d Device) Ref() string { return d.DeviceID + "@" + d.ManufacturerID }

// Upserted is the outcome of one row of a bulk pre-enrolment.
type Upserted int

// Row outcomes.
const (
	Inserted  Upserted = iota // new device
	Unchanged                 // this manufacturer uploaded it before: idempotent
)

// UpsertDevices pre-enrols devices for manufacturerID (each Device's ID is
// the manufacturer's device ID) in chunks of one multi-row INSERT each, so
// 100,000 rows are a few hundred statements, and reports each row's outcome
// in order. Re-uploading a device is not an error and changes nothing.
//
// Device IDs are per manufacturer: another manufacturer's device of the
// same ID does not stop the upload and changes nothing in its answer (it
// is Inserted like any new ID). The row's key is its device ID when that is
// free, or else manufacturerID "/" device ID: no device ID holds a '/', so
// the two kinds of key never meet. Re-uploads are recognised by the unique
// (manufacturer_id, device_id) index, whatever the key.
func (s *Store) UpsertDevices(ctx context.Context, manufacturerID string, devices []Device, now time.Time) ([]Upserted, error) {
	out := make([]Upserted, len(devices))
	const chunk = 500
	for start := 0; start < len(devices); start += chunk {
		part := devices[start:min(start+chunk, len(devices))]
		err := s.tx(ctx, "upsert_devices", func(q querier) error {
			inserted, err := insertDevices(ctx, q, manufacturerID, part, func(d Device) string { return d.ID }, now)
			if err != nil {
				return err
			}
			var rest []Device
			for _, d := range part {
				if !inserted[d.ID] {
					rest = append(rest, d)
				}
			}
			mine := map[string]bool{}
			for _, p := range chunked(rest, 400) {
				args := []any{manufacturerID}
				var b strings.Builder
				b.WriteString(`SELECT device_id FROM devices WHERE manufacturer_id = $1 AND device_id IN (`)
				for i, d := range p {
					if i > 0 {
						b.WriteString(", ")
					}
					args = append(args, d.ID)
					b.WriteString("$" + strconv.Itoa(len(args)))
				}
				b.WriteString(")")
				if err := queryEach(ctx, q, b.String(), args, func(r rows) error {
					var id string
					err := r.Scan(&id)
					mine[id] = true
					return err
				}); err != nil {
					return err
				}
			}
			var others []Device
			for _, d := range rest {
				if !mine[d.ID] {
					others = append(others, d)
				}
			}
			// The ID is another manufacturer's key: this one's device gets
			// the scoped key, and the answer is the same as for a free ID.
			again, err := insertDevices(ctx, q, manufacturerID, others, func(d Device) string { return manufacturerID + "/" + d.ID }, now)
			if err != nil {
				return err
			}
			for _, d := range others {
				if !again[d.ID] {
					return fmt.Errorf("device %s changed under the upload", d.ID)
				}
			}
			for i, d := range part {
				if mine[d.ID] {
					out[start+i] = Unchanged
				} else {
					out[start+i] = Inserted
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

// insertDevices inserts the devices under the keys key gives them, skipping
// any row that conflicts on its key or on (manufacturer_id, device_id), and
// returns the device IDs it inserted.
func insertDevices(ctx context.Context, q querier, manufacturerID string, part []Device, key func(Device) string, now time.Time) (map[string]bool, error) {
	inserted := map[string]bool{}
	if len(part) == 0 {
		return inserted, nil
	}
	var b strings.Builder
	b.WriteString(`INSERT INTO devices (id, device_id, manufacturer_id, tenant, claim_code_hash, device_cert_der, device_cert_sha256,
		state, created_at, updated_at) VALUES `)
	args := make([]any, 0, len(part)*10)
	for i, d := range part {
		if i > 0 {
			b.WriteString(", ")
		}
		n := len(args)
		b.WriteString("(")
		for j := 1; j <= 10; j++ {
			if j > 1 {
				b.WriteString(", ")
			}
			b.WriteString("$" + strconv.Itoa(n+j))
		}
		b.WriteString(")")
		args = append(args, key(d), d.ID, manufacturerID, manufacturerID, d.ClaimCodeHash, d.DeviceCertDER, d.DeviceCertSHA256,
			DevicePreEnrolled, now.UTC(), now.UTC())
	}
	b.WriteString(` ON CONFLICT DO NOTHING RETURNING device_id`)
	err := queryEach(ctx, q, b.String(), args, func(r rows) error {
		var id string
		err := r.Scan(&id)
		inserted[id] = true
		return err
	})
	return inserted, err
}

// DeviceFilter narrows a device listing.
type DeviceFilter struct {
	State    string // one of the Device* states, or "" for all
	IDPrefix string
	// After and AfterManufacturer are the keyset cursor: the previous
	// page's last device. After alone (a device ID) resumes after every
	// device of that ID, whatever its manufacturer.
	After             string
	AfterManufacturer string
	Limit             int
}

// page is the filter's condition for tenant ("" is everyone's, for an
// sp-admin), its arguments, and the page size: the condition selects the
// page's devices and at most a few more, which ORDER BY device_id,
// manufacturer_id LIMIT size then cuts to the page.
//
// The indexes order devices by (tenant[, state], device_id), not by
// manufacturer, and sorting everything after the cursor by manufacturer
// too would make every page cost the rest of the listing. So the
// condition is a range on device_id: from the cursor to the device ID of
// the size-th device after it (a scalar subquery that walks size entries
// of the same index), that ID's every device included. Only that range
// is sorted, and no page ends inside a device ID unless its manufacturers
// are told apart by the cursor.
func (f DeviceFilter) page(tenant string) (string, []any, int) {
	where, args := `tenant = $1`, []any{tenant}
	if tenant == "" { // sp-admin: everyone's
		where, args = `1 = 1`, nil
	}
	if f.State != "" {
		args = append(args, f.State)
		where += ` AND state = $` + strconv.Itoa(len(args))
	}
	// hi bounds the device IDs from above: past the prefix, or past every
	// device ID (they are ASCII, and U+10FFFF sorts after them bytewise).
	hi := "\U0010FFFF"
	if f.IDPrefix != "" {
		// A range, not LIKE: it uses the index on every engine and needs no
		// escaping of % and _.
		hi = f.IDPrefix + "\U0010FFFF"
		args = append(args, f.IDPrefix)
		where += ` AND device_id >= $` + strconv.Itoa(len(args))
	}
	// next is the devices after the cursor's device ID; the page also
	// holds the rest of the cursor's own ID, its manufacturers after the
	// cursor's.
	next, rest := where, ""
	if f.After != "" {
		args = append(args, f.After)
		a := `$` + strconv.Itoa(len(args))
		next += ` AND device_id > ` + a
		if f.AfterManufacturer != "" {
			args = append(args, f.AfterManufacturer)
			rest = where + ` AND device_id >= ` + a + ` AND (device_id > ` + a + ` OR manufacturer_id > $` + strconv.Itoa(len(args)) + `)`
		}
	}
	if rest == "" {
		rest = next
	}
	limit := f.Limit
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	// One upper bound, so that every engine reads the page as one index
	// range: the size-th device ID after the cursor's, or hi when fewer
	// remain. The subquery is the plain keyset walk (no OR: PostgreSQL
	// without statistics would estimate that a few rows and read the
	// whole rest of the listing into a bitmap to sort it); whatever plan
	// the page itself gets, it reads no further than that bound.
	args = append(args, hi)
	h := `$` + strconv.Itoa(len(args))
	return rest + ` AND device_id <= COALESCE((SELECT device_id FROM devices WHERE ` + next + ` AND device_id < ` + h +
		` ORDER BY device_id LIMIT 1 OFFSET ` + strconv.Itoa(limit-1) + `), ` + h + `)`, args, limit
}

// Devices lists a tenant's devices in (device ID, manufacturer) order, one
// page at a time. Keyset paging on the (tenant, device_id) and (tenant,
// state, device_id) indexes keeps every page as fast at a million devices
// as at ten (DeviceFilter.page); a tenant holding one ID from two
// manufacturers sees both, wherever a page ends, when the cursor names the
// manufacturer too.
func (s *Store) Devices(ctx context.Context, tenant string, f DeviceFilter) ([]Device, error) {
	where, args, limit := f.page(tenant)
	out, err := list(ctx, s, scanDevice, `SELECT `+deviceColumns+` FROM devices WHERE `+where+
		` ORDER BY device_id, manufacturer_id LIMIT `+strconv.Itoa(limit), args...)
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

// backfillDeviceIDs gives every device without a device_id (each uploaded
// before migration 16) its key as its device ID, a thousand rows per
// transaction, so a registry of millions of devices is not rewritten in one
// transaction (CockroachDB limits a transaction's size). Idempotent: only
// rows still without one are touched.
func backfillDeviceIDs(ctx context.Context, s *Store) error {
	after := ""
	for {
		var ids []any
		err := s.read(ctx, func(q querier) error {
			ids = ids[:0]
			return queryEach(ctx, q, `SELECT id FROM devices WHERE id > $1 AND device_id IS NULL ORDER BY id LIMIT 1000`, []any{after},
				func(r rows) error {
					var id string
					err := r.Scan(&id)
					ids = append(ids, id)
					return err
				})
		})
		if err != nil {
			return fmt.Errorf("backfill device IDs: %w", err)
		}
		if len(ids) == 0 {
			return nil
		}
		if err := s.tx(ctx, "backfill_device_ids", func(q querier) error {
			st := inStmt(`UPDATE devices SET device_id = id WHERE device_id IS NULL AND id IN `, ids, -1)
			_, err := q.exec(ctx, st.sql, st.args...)
			return err
		}); err != nil {
			return fmt.Errorf("backfill device IDs: %w", err)
		}
		after = ids[len(ids)-1].(string)
	}
}

// DevicesNamed returns every manufacturer's device of one device ID (the
// caller decides which of them the asker may see or claim): a lookup on
// the devices_device_id index.
func (s *Store) DevicesNamed(ctx context.Context, deviceID string) ([]Device, error) {
	out, err := list(ctx, s, scanDevice, `SELECT `+deviceColumns+` FROM devices WHERE device_id = $1`, deviceID)
	if err != nil {
		return nil, fmt.Errorf("devices named %s: %w", deviceID, err)
	}
	return out, nil
}

// DevicesNamedIn is DevicesNamed for many device IDs at once, by ID.
func (s *Store) DevicesNamedIn(ctx context.Context, deviceIDs []string) (map[string][]Device, error) {
	out := map[string][]Device{}
	ids := make([]any, len(deviceIDs))
	for i, id := range deviceIDs {
		ids[i] = id
	}
	err := s.read(ctx, func(q querier) error {
		clear(out)
		return queryIn(ctx, q, `SELECT `+deviceColumns+` FROM devices WHERE device_id IN `, ids, func(r rows) error {
			d, err := scanDevice(r)
			out[d.DeviceID] = append(out[d.DeviceID], d)
			return err
		})
	})
	if err != nil {
		return nil, fmt.Errorf("devices named: %w", err)
	}
	return out, nil
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
		// subscriber's tenant. Device IDs are the manufacturer's own
		// (device_id, unique per manufacturer); the audit trail names each
		// by its registry key, read first. Pipelined: a few round trips on
		// PostgreSQL whatever the number of devices.
		keys := map[string]string{}
		for _, part := range chunked(deviceIDs, 400) {
			args := []any{manufacturerID}
			var b strings.Builder
			b.WriteString(`SELECT device_id, id FROM devices WHERE manufacturer_id = $1 AND device_id IN (`)
			for i, id := range part {
				if i > 0 {
					b.WriteString(", ")
				}
				args = append(args, id)
				b.WriteString("$" + strconv.Itoa(len(args)))
			}
			b.WriteString(")")
			if err := queryEach(ctx, q, b.String(), args, func(r rows) error {
				var name, key string
				err := r.Scan(&name, &key)
				keys[name] = key
				return err
			}); err != nil {
				return err
			}
		}
		var moves []stmt
		var movedKeys []string
		for _, id := range deviceIDs {
			key, ok := keys[id]
			if !ok {
				continue // not this manufacturer's
			}
			moves = append(moves, stmt{`UPDATE devices SET owner_id = $3, tenant = $3, updated_at = $4, released_at = NULL
				WHERE id = $1 AND manufacturer_id = $2 AND tenant = $2 AND state = 'pre-enrolled'`,
				[]any{key, manufacturerID, subscriberID, now.UTC()}, -1})
			movedKeys = append(movedKeys, key)
		}
		if len(moves) == 0 {
			return nil
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
					Subject: movedKeys[i], Detail: map[string]any{"from": manufacturerID}}))
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
