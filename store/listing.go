package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// CredentialSummary is what reconciling a registry needs of a credential:
// which it is, its state, and what identifies it outside the registry (a
// certificate's serial and SHA-256, a shared key's key ID). Never the DER,
// a derivation context or a sealed key.
type CredentialSummary struct {
	ID         string
	Type       string
	SUID       int
	Status     string
	NotAfter   time.Time
	Serial     *string
	CertSHA256 []byte
	KeyID      *string
}

// DeviceCredentials is a device with its credentials, oldest first.
type DeviceCredentials struct {
	Device
	Credentials []CredentialSummary
}

// maxListingCredentials bounds the credentials one page of
// DevicesWithCredentials holds, whatever its devices' histories (renewals
// and transfers leave every earlier credential behind): a page ends before
// the device that would cross it, and the next page starts with that
// device.
var maxListingCredentials = 10000

// ErrHistoryTooLong: one device alone holds more credentials than a page of
// DevicesWithCredentials may (maxListingCredentials); its device page lists
// them.
var ErrHistoryTooLong = errors.New("store: a device holds more credentials than one listing page may")

// withColumns scans a row that holds a device's columns (deviceColumns,
// through scanDevice) and then more.
type withColumns struct {
	r    row
	more []any
}

func (w withColumns) Scan(dest ...any) error { return w.r.Scan(append(dest, w.more...)...) }

// DevicesWithCredentials is Devices with each device's credentials of the
// same tenant (all of them for the sp-admin's ""), as the device page shows
// them, in one query per page: the page of devices on its keyset index,
// joined to the credentials on credentials_device. A registry of N
// devices is reconciled in N/limit queries, not N+1.
//
// more reports whether devices may follow the page: it is full (limit
// devices), or it ended early at maxListingCredentials. The cursor for the
// next page is its last device (DeviceFilter.After, AfterManufacturer).
func (s *Store) DevicesWithCredentials(ctx context.Context, tenant string, f DeviceFilter) (page []DeviceCredentials, more bool, err error) {
	q, args, limit := devicesWithCredentialsSQL(s.Backend(), tenant, f)
	var out []DeviceCredentials
	full := false
	err = s.read(ctx, func(qr querier) error {
		out, full = out[:0], false
		n := 0
		return queryEach(ctx, qr, q, args, func(r rows) error {
			var id, typ, status *string
			var suid *int
			var notAfter *time.Time
			var c CredentialSummary
			var key, maker string // the page's order, already in d
			d, err := scanDevice(withColumns{r, []any{&key, &maker, &id, &typ, &suid, &status, &notAfter, &c.Serial, &c.CertSHA256, &c.KeyID}})
			if err != nil {
				return err
			}
			if k := len(out); k == 0 || out[k-1].ID != d.ID {
				out = append(out, DeviceCredentials{Device: d, Credentials: []CredentialSummary{}})
			}
			if n++; n > maxListingCredentials {
				full = true // the query's LIMIT row: more follow
				return nil
			}
			if id == nil { // LEFT JOIN: a device without credentials
				return nil
			}
			c.ID, c.Type, c.SUID, c.Status, c.NotAfter = *id, *typ, *suid, *status, notAfter.UTC()
			last := &out[len(out)-1]
			last.Credentials = append(last.Credentials, c)
			return nil
		})
	})
	if err != nil {
		return nil, false, fmt.Errorf("list devices with credentials: %w", err)
	}
	if full {
		// The last device's credentials may have been cut short: it
		// starts the next page instead.
		out = out[:len(out)-1]
		if len(out) == 0 {
			return nil, false, ErrHistoryTooLong
		}
		return out, true, nil
	}
	return out, len(out) == limit, nil
}

// devicesWithCredentialsSQL is DevicesWithCredentials' query, its
// arguments and its page size.
func devicesWithCredentialsSQL(backend, tenant string, f DeviceFilter) (string, []any, int) {
	where, args, limit := f.page(tenant)
	on := `c.device_id = d.id`
	if backend == "postgres" {
		// devices.id sorts bytewise (COLLATE "C", schema.go {{key}}),
		// credentials.device_id in the database's collation, and the
		// comparison would take the column's "C": credentials_device (in
		// the database's) could not serve it, and every page would scan
		// the credentials. Equality is bytewise under any deterministic
		// collation, so naming the index's changes no answer.
		on = `c.device_id = d.id COLLATE "default"`
	}
	if tenant != "" {
		// $1 is the tenant (DeviceFilter.page): the viewer's credentials
		// only, as on the device page (a previous owner's stay hidden).
		on += ` AND c.tenant = $1`
	}
	// d.* is deviceColumns (scanDevice) and the page's sort keys.
	return `SELECT d.*, c.id, c.type, c.suid, c.status, c.not_after, c.serial, c.cert_sha256, c.key_id
		FROM (SELECT ` + deviceColumns + `, device_id AS page_device_id, manufacturer_id AS page_manufacturer_id
			FROM devices WHERE ` + where + ` ORDER BY device_id, manufacturer_id LIMIT ` + strconv.Itoa(limit) + `) d
		LEFT JOIN credentials c ON ` + on + `
		ORDER BY d.page_device_id, d.page_manufacturer_id, c.created_at, c.id
		LIMIT ` + strconv.Itoa(maxListingCredentials+1), args, limit
}
