package portal

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/csv"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"

	"github.com/credfactory/credfactory/apierr"
	"github.com/credfactory/credfactory/store"
)

// DeviceRow is one row of a bulk pre-enrolment (DESIGN.md "Interfaces":
// deviceId,claimCode,deviceCert).
type DeviceRow struct {
	DeviceID   string `json:"deviceId"`
	ClaimCode  string `json:"claimCode,omitempty"`
	DeviceCert string `json:"deviceCert,omitempty"`
}

// RowError is a refused row: its 1-based position in the upload.
type RowError struct {
	Row      int    `json:"row"`
	DeviceID string `json:"deviceId,omitempty"`
	Error    string `json:"error"`
}

// UploadReport answers a bulk pre-enrolment.
type UploadReport struct {
	Accepted  int        `json:"accepted"`
	Inserted  int        `json:"inserted"`
	Unchanged int        `json:"unchanged"`
	Rejected  []RowError `json:"rejected"`
}

var deviceIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)

const (
	maxClaimCode   = 128
	minClaimCode   = 6
	maxCertPEM     = 8 << 10
	uploadChunk    = 2000
	maxRowsErrored = 10000 // a report never grows without bound
)

// RowReader yields upload rows one at a time, so a 100,000-row upload is
// never held whole in memory.
type RowReader func() (DeviceRow, error)

// JSONRows streams a JSON array of DeviceRow.
func JSONRows(r io.Reader) (RowReader, error) {
	dec := json.NewDecoder(r)
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('[') {
		return nil, apierr.New(http.StatusBadRequest, "bad_upload", "the body must be a JSON array of {deviceId, claimCode, deviceCert}")
	}
	return func() (DeviceRow, error) {
		if !dec.More() {
			return DeviceRow{}, io.EOF
		}
		var row DeviceRow
		if err := dec.Decode(&row); err != nil {
			if e := streamErr(err); e != nil {
				return DeviceRow{}, e
			}
			return DeviceRow{}, apierr.New(http.StatusBadRequest, "bad_upload", "malformed JSON row: "+err.Error())
		}
		return row, nil
	}, nil
}

// CSVRows streams CSV with the header deviceId,claimCode,deviceCert (the
// last two columns may be absent).
func CSVRows(r io.Reader) (RowReader, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = true
	header, err := cr.Read()
	if err != nil {
		return nil, apierr.New(http.StatusBadRequest, "bad_upload", "the CSV has no header: want deviceId,claimCode,deviceCert")
	}
	want := []string{"deviceId", "claimCode", "deviceCert"}
	if len(header) == 0 || len(header) > 3 {
		return nil, apierr.New(http.StatusBadRequest, "bad_upload", "the CSV header must be deviceId,claimCode,deviceCert")
	}
	for i, h := range header {
		if strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")) != want[i] {
			return nil, apierr.New(http.StatusBadRequest, "bad_upload", "the CSV header must be deviceId,claimCode,deviceCert")
		}
	}
	return func() (DeviceRow, error) {
		rec, err := cr.Read()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return DeviceRow{}, io.EOF
			}
			if e := streamErr(err); e != nil {
				return DeviceRow{}, e
			}
			return DeviceRow{}, apierr.New(http.StatusBadRequest, "bad_upload", "malformed CSV: "+err.Error())
		}
		if len(rec) > len(header) {
			return DeviceRow{}, errRowShape
		}
		var row DeviceRow
		row.DeviceID = rec[0]
		if len(rec) > 1 {
			row.ClaimCode = rec[1]
		}
		if len(rec) > 2 {
			row.DeviceCert = rec[2]
		}
		return row, nil
	}, nil
}

var errRowShape = errors.New("more columns than the header")

// streamErr passes on what the body reader itself reported (an upload over
// the route's limit is a 413, not a parse error).
func streamErr(err error) *apierr.Error {
	var e *apierr.Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}

// Upload pre-enrols a manufacturer's devices. Bad rows are reported and
// skipped; good rows are stored in chunks as they stream in; re-uploading a
// device is accepted and changes nothing.
func (p *Portal) Upload(ctx context.Context, who Principal, next RowReader) (UploadReport, error) {
	report := UploadReport{Rejected: []RowError{}}
	if err := requireRole(who, store.RoleManufacturer); err != nil {
		return report, err
	}
	manufacturer := who.Stakeholder.ID
	seen := map[string]int{}
	var chunk []store.Device
	var rows []int
	flush := func() error {
		if len(chunk) == 0 {
			return nil
		}
		outcomes, err := p.st.UpsertDevices(ctx, manufacturer, chunk, p.now())
		if err != nil {
			return storeErr(err)
		}
		for i, o := range outcomes {
			switch o {
			case store.Inserted:
				report.Inserted++
			case store.Unchanged:
				report.Unchanged++
			case store.Taken:
				report.reject(rows[i], chunk[i].ID, "the device ID is registered by another manufacturer")
			}
		}
		report.Accepted = report.Inserted + report.Unchanged
		chunk, rows = chunk[:0], rows[:0]
		return nil
	}
	for n := 1; ; n++ {
		row, err := next()
		if errors.Is(err, io.EOF) {
			break
		}
		if errors.Is(err, errRowShape) {
			report.reject(n, "", err.Error())
			continue
		}
		if err != nil {
			// The stream itself is broken: stop. What was stored stays (it
			// was valid, and a corrected re-upload is idempotent); say so.
			if ferr := flush(); ferr != nil {
				return report, ferr
			}
			e := *apierr.As(err)
			e.Message = fmt.Sprintf("%s (at row %d; the %d valid rows before it were stored: fix the file and upload it again, a re-upload changes nothing for them)",
				e.Message, n, report.Accepted)
			return report, &e
		}
		d, problem := p.checkRow(ctx, row)
		if problem == "" {
			if first, dup := seen[d.ID]; dup {
				problem = fmt.Sprintf("duplicate of row %d", first)
			}
		}
		if problem != "" {
			report.reject(n, row.DeviceID, problem)
			continue
		}
		seen[d.ID] = n
		chunk, rows = append(chunk, d), append(rows, n)
		if len(chunk) == uploadChunk {
			if err := flush(); err != nil {
				return report, err
			}
		}
	}
	if err := flush(); err != nil {
		return report, err
	}
	return report, nil
}

func (r *UploadReport) reject(row int, id, msg string) {
	if len(r.Rejected) < maxRowsErrored {
		if len(id) > 140 {
			id = id[:140]
		}
		r.Rejected = append(r.Rejected, RowError{Row: row, DeviceID: id, Error: msg})
	}
}

// checkRow validates a row and hashes its claim code; a non-empty string is
// the reason the row is refused.
func (p *Portal) checkRow(ctx context.Context, row DeviceRow) (store.Device, string) {
	d := store.Device{ID: strings.TrimSpace(row.DeviceID)}
	if !deviceIDPattern.MatchString(d.ID) {
		return d, "deviceId must be 1-128 letters, digits, '.', '_', ':' or '-'"
	}
	if code := strings.TrimSpace(row.ClaimCode); code != "" {
		if len(code) < minClaimCode || len(code) > maxClaimCode {
			return d, fmt.Sprintf("claimCode must be %d to %d characters", minClaimCode, maxClaimCode)
		}
		h, err := p.claimHash(ctx, d.ID, code)
		if err != nil {
			return d, "the claim code could not be hashed (HSM unavailable); upload again"
		}
		d.ClaimCodeHash = h
	}
	if pemText := strings.TrimSpace(row.DeviceCert); pemText != "" {
		if len(pemText) > maxCertPEM {
			return d, "deviceCert is larger than 8 KiB"
		}
		block, _ := pem.Decode([]byte(pemText))
		if block == nil || block.Type != "CERTIFICATE" {
			return d, "deviceCert is not a PEM certificate"
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return d, "deviceCert does not parse: " + err.Error()
		}
		fp := sha256.Sum256(cert.Raw)
		d.DeviceCertDER, d.DeviceCertSHA256 = cert.Raw, fp[:]
	}
	return d, ""
}

// claimHash keys the claim code's hash in the HSM and binds it to the device,
// so equal codes on two labels hash differently and a database copy gives an
// attacker nothing to guess against offline.
func (p *Portal) claimHash(ctx context.Context, deviceID, code string) ([]byte, error) {
	return p.claimKey.Sum(ctx, claimMessage(deviceID, code))
}

// Devices lists the caller's devices.
func (p *Portal) Devices(ctx context.Context, who Principal, f store.DeviceFilter) ([]store.Device, error) {
	switch f.State {
	case "", store.DevicePreEnrolled, store.DeviceTokenIssued, store.DeviceEnrolled, store.DeviceRevoked:
	default:
		return nil, apierr.New(http.StatusBadRequest, "bad_filter", "state must be pre-enrolled, token-issued, enrolled or revoked")
	}
	ds, err := p.st.Devices(ctx, who.Tenant(), f)
	return ds, storeErr(err)
}

// Device returns one of the caller's devices; another tenant's device is
// not found, exactly like a device that does not exist.
func (p *Portal) Device(ctx context.Context, who Principal, id string) (store.Device, error) {
	d, err := p.st.Device(ctx, id)
	if errors.Is(err, store.ErrNotFound) || err == nil && !who.sees(d.Tenant) {
		return store.Device{}, errDeviceNotFound
	}
	return d, storeErr(err)
}

// DeviceDetail is a device with its credentials, enrolments and audit trail.
type DeviceDetail struct {
	Device      store.Device
	Credentials []store.Credential
	Enrolments  []store.Enrolment
	Audit       []store.AuditEvent
}

// Detail gathers the device page.
func (p *Portal) Detail(ctx context.Context, who Principal, id string) (DeviceDetail, error) {
	d, err := p.Device(ctx, who, id)
	if err != nil {
		return DeviceDetail{}, err
	}
	out := DeviceDetail{Device: d}
	// The viewer's tenant's history only: after a transfer the new owner
	// (and the manufacturer holding a released device) must not see the
	// previous owner's tokens or credentials. An sp-admin sees all.
	if out.Credentials, err = p.st.CredentialsOf(ctx, d.ID, who.Tenant()); err != nil {
		return out, storeErr(err)
	}
	if out.Enrolments, err = p.st.EnrolmentsOf(ctx, d.ID, who.Tenant()); err != nil {
		return out, storeErr(err)
	}
	// The device's trail and its credentials' (revocations and renewals
	// are filed under the credential), the viewer's tenant's only.
	subjects := []string{d.ID}
	for _, c := range out.Credentials {
		subjects = append(subjects, c.ID)
	}
	if out.Audit, err = p.st.AuditOf(ctx, who.Tenant(), subjects); err != nil {
		return out, storeErr(err)
	}
	return out, nil
}

// HandOver moves a manufacturer's devices to a subscriber.
func (p *Portal) HandOver(ctx context.Context, who Principal, subscriber string, ids []string) (int, error) {
	if err := requireRole(who, store.RoleManufacturer); err != nil {
		return 0, err
	}
	if len(ids) == 0 || len(ids) > 100000 {
		return 0, apierr.New(http.StatusBadRequest, "bad_request", "give 1 to 100000 device IDs")
	}
	sub, err := p.st.StakeholderBy(ctx, "name", subscriber)
	if errors.Is(err, store.ErrNotFound) {
		return 0, apierr.New(http.StatusNotFound, "subscriber_not_found", "no such subscriber")
	}
	if err != nil {
		return 0, storeErr(err)
	}
	if sub.Role != store.RoleSubscriber {
		return 0, apierr.New(http.StatusBadRequest, "not_a_subscriber", "devices are handed over to a subscriber")
	}
	n, err := p.st.HandOver(ctx, who.Stakeholder.ID, sub.ID, ids, who.actor(), p.now())
	return n, storeErr(err)
}
