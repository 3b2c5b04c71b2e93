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
	"hash/maphash"
	"io"
	"math"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/credfactory/credfactory/apierr"
	"github.com/credfactory/credfactory/httpapi"
	"github.com/credfactory/credfactory/store"
)

// DeviceRow is one row of a bulk pre-enrolment (api/openapi.yaml DeviceRow:
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
	maxClaimCode = 128
	minClaimCode = 6
	maxCertPEM   = 8 << 10
	uploadChunk  = 2000
	// uploadChunkBytes flushes a chunk early when its certificates add up:
	// 2000 rows of 8 KiB certificates would otherwise be 16 MB per upload.
	uploadChunkBytes = 2 << 20
	maxRowsErrored   = 10000 // a report never grows without bound
)

// RowReader yields upload rows one at a time, so a 100,000-row upload is
// never held whole in memory.
type RowReader func() (DeviceRow, error)

// maxRowBytes bounds what the parsers may read for one row: the largest
// legitimate row (a 128-character ID and claim code, an 8 KiB certificate,
// quoting and line ends) with room to spare. The CSV and JSON parsers
// buffer a whole field before checkRow sees it, so the bound is enforced
// on the bytes they pull, not on the fields they return.
const maxRowBytes = 16 << 10

// rowReadSize caps one read by the parsers, so that what they buffer ahead
// of the row being parsed (and count against it) stays small.
const rowReadSize = 4 << 10

var errRowTooLarge = apierr.New(http.StatusRequestEntityTooLarge, "row_too_large",
	fmt.Sprintf("a row is larger than %d KiB (deviceId and claimCode have at most %d characters, deviceCert at most 8 KiB)",
		maxRowBytes>>10, maxClaimCode))

// rowLimiter is the body as the parsers see it: reads of at most
// rowReadSize, and at most maxRowBytes+rowReadSize between two rows (a
// parser's read-ahead of the next row is counted against the row before).
type rowLimiter struct {
	r io.Reader
	n int
}

func (l *rowLimiter) Read(p []byte) (int, error) {
	const max = maxRowBytes + rowReadSize
	if l.n >= max {
		return 0, errRowTooLarge
	}
	p = p[:min(len(p), rowReadSize, max-l.n)]
	n, err := l.r.Read(p)
	l.n += n
	return n, err
}

// next starts counting for the next row.
func (l *rowLimiter) next() { l.n = 0 }

// JSONRows streams a JSON array of DeviceRow.
func JSONRows(r io.Reader) (RowReader, error) {
	lim := &rowLimiter{r: r}
	dec := json.NewDecoder(lim)
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('[') {
		if e := streamErr(err); e != nil {
			return nil, e
		}
		return nil, apierr.New(http.StatusBadRequest, "bad_upload", "the body must be a JSON array of {deviceId, claimCode, deviceCert}")
	}
	return func() (DeviceRow, error) {
		lim.next()
		if !dec.More() {
			return DeviceRow{}, io.EOF
		}
		var row DeviceRow
		if err := dec.Decode(&row); err != nil {
			if e := streamErr(err); e != nil {
				return DeviceRow{}, e
			}
			return DeviceRow{}, apierr.New(http.StatusBadRequest, "bad_upload", "malformed JSON row: "+httpapi.JSONError(err))
		}
		return row, nil
	}, nil
}

// CSVRows streams CSV with the header deviceId,claimCode,deviceCert (the
// last two columns may be absent).
func CSVRows(r io.Reader) (RowReader, error) {
	lim := &rowLimiter{r: r}
	cr := csv.NewReader(lim)
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = true
	header, err := cr.Read()
	if e := streamErr(err); e != nil {
		return nil, e
	}
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
		lim.next()
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
	// seen remembers each row's device ID by a 64-bit keyed hash, not the
	// ID itself: a million-row upload costs a few tens of MB, not the IDs
	// over again. A false "duplicate" needs a collision under this
	// upload's random seed (about n²/2⁶⁵: 3·10⁻⁸ for a million rows).
	seed := maphash.MakeSeed()
	seen := map[uint64]int{}
	var chunk []store.Device
	var rows []int
	chunkBytes := 0
	flush := func() error {
		if len(chunk) == 0 {
			return nil
		}
		outcomes, err := p.st.UpsertDevices(ctx, manufacturer, chunk, p.now())
		if err != nil {
			return storeErr(err)
		}
		for _, o := range outcomes {
			switch o {
			case store.Inserted:
				report.Inserted++
			case store.Unchanged:
				report.Unchanged++
			}
		}
		report.Accepted = report.Inserted + report.Unchanged
		chunk, rows, chunkBytes = chunk[:0], rows[:0], 0
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
		key := maphash.String(seed, d.ID)
		if problem == "" {
			if first, dup := seen[key]; dup {
				problem = fmt.Sprintf("duplicate of row %d", first)
			}
		}
		if problem != "" {
			report.reject(n, row.DeviceID, problem)
			continue
		}
		seen[key] = n
		chunk, rows = append(chunk, d), append(rows, n)
		chunkBytes += len(d.ID) + len(d.DeviceCertDER)
		if len(chunk) == uploadChunk || chunkBytes >= uploadChunkBytes {
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
		// A copy: the parsers' ID is a slice of the whole row's text,
		// certificate included, which the report would otherwise keep.
		r.Rejected = append(r.Rejected, RowError{Row: row, DeviceID: strings.Clone(id), Error: msg})
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
		if problem := claimCodeProblem(code); problem != "" {
			return d, problem
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
			// x509's message names ASN.1 tags and Go types; say what the
			// row's author can act on.
			return d, "deviceCert is not a valid X.509 certificate (its DER does not parse)"
		}
		fp := sha256.Sum256(cert.Raw)
		d.DeviceCertDER, d.DeviceCertSHA256 = cert.Raw, fp[:]
	}
	return d, ""
}

// minClaimCodeBits is the least estimated entropy of a claim code. The
// code is a label's only proof of control over the device, and online
// guesses are throttled, not impossible: 32 bits is 7 random letters and
// digits, or 10 random digits.
const minClaimCodeBits = 32

// claimCodeProblem refuses a claim code that is not printable (control
// characters, NUL, invalid UTF-8) or too guessable: its entropy is
// estimated as length times log2 of the alphabet its character classes
// span, and repetitive or sequential codes ("000000", "123456789",
// "abcabc") count for nothing.
func claimCodeProblem(code string) string {
	if !utf8.ValidString(code) {
		return "claimCode must be UTF-8 text"
	}
	var lower, upper, digit, other, wide bool
	distinct := map[rune]bool{}
	for _, r := range code {
		switch {
		case !unicode.IsPrint(r):
			return "claimCode must be printable characters (no control characters)"
		case r >= 'a' && r <= 'z':
			lower = true
		case r >= 'A' && r <= 'Z':
			upper = true
		case r >= '0' && r <= '9':
			digit = true
		case r < utf8.RuneSelf:
			other = true
		default:
			wide = true
		}
		distinct[r] = true
	}
	pool := 0
	for _, c := range []struct {
		set  bool
		size int
	}{{lower, 26}, {upper, 26}, {digit, 10}, {other, 33}, {wide, 100}} {
		if c.set {
			pool += c.size
		}
	}
	n := utf8.RuneCountInString(code)
	bits := float64(n) * math.Log2(float64(pool))
	if len(distinct) < 4 || sequential([]rune(code)) || bits < minClaimCodeBits {
		return fmt.Sprintf("claimCode is too easy to guess: use at least %d bits of randomness (e.g. 7 random letters and digits, or 10 random digits)", minClaimCodeBits)
	}
	return ""
}

// claimHash keys the claim code's hash in the HSM and binds it to the device,
// so equal codes on two labels hash differently and a database copy gives an
// attacker nothing to guess against offline.
func (p *Portal) claimHash(ctx context.Context, deviceID, code string) ([]byte, error) {
	return p.claimKey.Sum(ctx, claimMessage(deviceID, code))
}

// Devices lists the caller's devices.
func (p *Portal) Devices(ctx context.Context, who Principal, f store.DeviceFilter) ([]store.Device, error) {
	f, err := checkFilter(f)
	if err != nil {
		return nil, err
	}
	ds, err := p.st.Devices(ctx, who.Tenant(), f)
	return ds, storeErr(err)
}

// DevicesWithCredentials lists the caller's devices with their
// credentials, one page (at most MaxListingPage devices) in one registry
// query: what an owner, an auditor or a bench reconciling the registry
// reads instead of every device's page. The scope is the device page's:
// the caller's tenant's devices, and of each its tenant's credentials (a
// previous owner's stay hidden); an sp-admin sees all. more reports that
// the listing goes on after the page's last device (Cursor).
func (p *Portal) DevicesWithCredentials(ctx context.Context, who Principal, f store.DeviceFilter) (page []store.DeviceCredentials, more bool, err error) {
	f, err = checkFilter(f)
	if err != nil {
		return nil, false, err
	}
	page, more, err = p.st.DevicesWithCredentials(ctx, who.Tenant(), f)
	if errors.Is(err, store.ErrHistoryTooLong) {
		return nil, false, errHistoryTooLong
	}
	return page, more, storeErr(err)
}

// MaxListingPage is the most devices one page of a device listing holds.
const MaxListingPage = 1000

var (
	errBadCursor = apierr.New(http.StatusBadRequest, "bad_cursor",
		"after must be the previous page's next: a device ID, or deviceId@manufacturerId")
	errHistoryTooLong = apierr.New(http.StatusUnprocessableEntity, "history_too_long",
		"the next device holds more credentials than one listing page may: read it on its device page")
)

// checkFilter validates a listing's filter and splits its cursor: after=
// is the previous page's next, deviceId@manufacturerId (Cursor), or a
// device ID alone, which resumes after every device of that ID.
func checkFilter(f store.DeviceFilter) (store.DeviceFilter, error) {
	switch f.State {
	case "", store.DevicePreEnrolled, store.DeviceTokenIssued, store.DeviceEnrolled, store.DeviceRevoked:
	default:
		return f, apierr.New(http.StatusBadRequest, "bad_filter", "state must be pre-enrolled, token-issued, enrolled or revoked")
	}
	if f.After == "" || f.AfterManufacturer != "" {
		return f, nil
	}
	id, manufacturer, scoped := strings.Cut(f.After, "@")
	if !deviceIDPattern.MatchString(id) || scoped && !manufacturerIDPattern.MatchString(manufacturer) {
		return f, errBadCursor
	}
	f.After, f.AfterManufacturer = id, manufacturer
	return f, nil
}

// manufacturerIDPattern is what a stakeholder ID may be in a cursor: the
// portal's are UUIDs, the admin tool's and the tests' short names.
var manufacturerIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)

// Cursor is the after= that resumes a listing after d: its device ID and
// manufacturer, so that a page ending between two manufacturers' devices
// of one ID loses neither.
func Cursor(d store.Device) string { return d.Ref() }

// errAmbiguousDevice: the caller sees (or may claim) devices of this ID from
// more than one manufacturer, which only the caller's own view can show.
var errAmbiguousDevice = apierr.New(http.StatusConflict, "ambiguous_device_id",
	"devices of this ID from more than one manufacturer: name one as deviceId@manufacturerId")

// named finds the devices a reference names: "deviceId" (any
// manufacturer's) or "deviceId@manufacturerId". Device IDs are per
// manufacturer (docs/ownership.md "Device IDs per manufacturer"); who may see which of
// them is the caller's to decide.
func (p *Portal) named(ctx context.Context, ref string) ([]store.Device, error) {
	id, manufacturer, scoped := strings.Cut(ref, "@")
	if !deviceIDPattern.MatchString(id) {
		return nil, nil
	}
	ds, err := p.st.DevicesNamed(ctx, id)
	if err != nil {
		return nil, storeErr(err)
	}
	if scoped {
		ds = slices.DeleteFunc(ds, func(d store.Device) bool { return d.ManufacturerID != manufacturer })
	}
	return ds, nil
}

// visible picks the one device among ds the caller sees: none is not
// found, more than one (the caller holds one ID from two manufacturers) is
// ambiguous.
func visible(who Principal, ds []store.Device) (store.Device, bool, error) {
	var out []store.Device
	for _, d := range ds {
		if who.sees(d.Tenant) {
			out = append(out, d)
		}
	}
	switch len(out) {
	case 0:
		return store.Device{}, false, nil
	case 1:
		return out[0], true, nil
	}
	return store.Device{}, false, errAmbiguousDevice
}

// Device returns one of the caller's devices by reference (named); another
// tenant's device is not found, exactly like a device that does not exist,
// whatever its manufacturer.
func (p *Portal) Device(ctx context.Context, who Principal, ref string) (store.Device, error) {
	ds, err := p.named(ctx, ref)
	if err != nil {
		return store.Device{}, err
	}
	d, ok, err := visible(who, ds)
	if err != nil {
		return store.Device{}, err
	}
	if !ok {
		return store.Device{}, errDeviceNotFound
	}
	return d, nil
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
