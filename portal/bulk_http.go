package portal

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/credfactory/credfactory/apierr"
	"github.com/credfactory/credfactory/httpapi"
	"github.com/valyala/fasthttp"
)

// Bulk answer formats.
const (
	FormatJSON   = "json"
	FormatNDJSON = "ndjson"
	FormatCSV    = "csv"
)

// bulkWriteDeadline is how long one chunk's answer may take to reach the
// client; it is renewed after every chunk, so a long answer never meets the
// server's write timeout as long as the client keeps reading.
const bulkWriteDeadline = 2 * time.Minute

var errBulkMedia = apierr.New(http.StatusUnsupportedMediaType, "unsupported_media_type",
	"send application/json (an array of {deviceId, proof}), application/x-ndjson (one per line) or text/csv (deviceId[,claimCode][,nonce,signature])")

// BulkRows picks the row reader for a body's media type.
func BulkRows(r io.Reader, mediaType string) (BulkRowReader, error) {
	switch mediaType {
	case "application/json":
		return bulkJSONRows(r)
	case "application/x-ndjson":
		return bulkNDJSONRows(r), nil
	case "text/csv":
		return bulkCSVRows(r)
	}
	return nil, errBulkMedia
}

func badBulkRow(what string, err error) error {
	if e := streamErr(err); e != nil {
		return e
	}
	return apierr.New(http.StatusBadRequest, "bad_rows", what+": "+strings.TrimPrefix(err.Error(), "json: "))
}

func decodeBulkRow(dec *json.Decoder) (BulkRow, error) {
	var row BulkRow
	if err := dec.Decode(&row); err != nil {
		return row, badBulkRow("malformed JSON row", err)
	}
	return row, nil
}

func bulkJSONRows(r io.Reader) (BulkRowReader, error) {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('[') {
		if e := streamErr(err); e != nil {
			return nil, e
		}
		return nil, apierr.New(http.StatusBadRequest, "bad_rows", "the body must be a JSON array of {deviceId, proof}")
	}
	done := false
	return func() (BulkRow, error) {
		if done {
			return BulkRow{}, io.EOF
		}
		if !dec.More() {
			done = true
			if _, err := dec.Token(); err != nil { // the closing ']'
				return BulkRow{}, badBulkRow("the JSON array does not end", err)
			}
			return BulkRow{}, io.EOF
		}
		return decodeBulkRow(dec)
	}, nil
}

func bulkNDJSONRows(r io.Reader) BulkRowReader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	return func() (BulkRow, error) {
		for sc.Scan() {
			line := bytes.TrimSpace(sc.Bytes())
			if len(line) == 0 {
				continue
			}
			dec := json.NewDecoder(bytes.NewReader(line))
			dec.DisallowUnknownFields()
			row, err := decodeBulkRow(dec)
			if err == nil && dec.More() {
				err = apierr.New(http.StatusBadRequest, "bad_rows", "one JSON object per line")
			}
			return row, err
		}
		if err := sc.Err(); err != nil {
			return BulkRow{}, badBulkRow("unreadable NDJSON", err)
		}
		return BulkRow{}, io.EOF
	}
}

// bulkCSVRows reads CSV whose header names deviceId first and then any of
// claimCode, nonce and signature.
func bulkCSVRows(r io.Reader) (BulkRowReader, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = 0 // every record as wide as the header
	cr.ReuseRecord = true
	header, err := cr.Read()
	bad := apierr.New(http.StatusBadRequest, "bad_rows", "the CSV header must be deviceId followed by any of claimCode, nonce, signature")
	if err != nil {
		if e := streamErr(err); e != nil {
			return nil, e
		}
		return nil, bad
	}
	cols := make([]string, len(header))
	for i, h := range header {
		cols[i] = strings.TrimSpace(strings.TrimPrefix(h, "\ufeff"))
		switch {
		case i == 0 && cols[i] == "deviceId":
		case i > 0 && (cols[i] == "claimCode" || cols[i] == "nonce" || cols[i] == "signature"):
		default:
			return nil, bad
		}
	}
	return func() (BulkRow, error) {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return BulkRow{}, io.EOF
		}
		if err != nil {
			return BulkRow{}, badBulkRow("malformed CSV", err)
		}
		row := BulkRow{DeviceID: rec[0]}
		var pr Proof
		for i := 1; i < len(rec); i++ {
			switch cols[i] {
			case "claimCode":
				pr.ClaimCode = rec[i]
			case "nonce":
				pr.Nonce = rec[i]
			case "signature":
				pr.Signature = rec[i]
			}
		}
		if pr != (Proof{}) {
			row.Proof = &pr
		}
		return row, nil
	}, nil
}

// BulkFormat picks the answer's format from an Accept header: NDJSON, CSV,
// or JSON (the default).
func BulkFormat(accept string) (string, error) {
	if strings.TrimSpace(accept) == "" {
		return FormatJSON, nil
	}
	for _, part := range strings.Split(accept, ",") {
		mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		switch mt {
		case "application/x-ndjson":
			return FormatNDJSON, nil
		case "text/csv":
			return FormatCSV, nil
		case "application/json", "*/*", "application/*":
			return FormatJSON, nil
		}
	}
	return "", apierr.New(http.StatusNotAcceptable, "not_acceptable", "answers are application/json, application/x-ndjson or text/csv")
}

func (p *Portal) apiBulk(ctx *fasthttp.RequestCtx) error {
	who, err := p.authenticateFor(ctx, ScopeEnrol)
	if err != nil {
		return err
	}
	format, err := BulkFormat(string(ctx.Request.Header.Peek("Accept")))
	if err != nil {
		return err
	}
	mt, _, _ := mime.ParseMediaType(string(ctx.Request.Header.ContentType()))
	if mt != "application/json" && mt != "application/x-ndjson" && mt != "text/csv" {
		return errBulkMedia
	}
	q := ctx.QueryArgs()
	plan, err := p.PlanBulk(ctx, who, BulkRequest{BatchID: string(ctx.Request.Header.Peek("Idempotency-Key")),
		OBFID: string(q.Peek("obfId")), AssignedIDType: string(q.Peek("assignedIdType"))})
	if err != nil {
		return err
	}
	// Authenticated and authorised: the body may now take as long as
	// 100,000 rows need, at the front end's minimum rate (before, it had the
	// read timeout, and a slow client's answer was cut mid-stream).
	httpapi.BeginStream(ctx)
	body := ctx.RequestBodyStream()
	if body == nil {
		body = bytes.NewReader(ctx.PostBody())
	}
	rows, err := BulkRows(body, mt)
	if err != nil {
		return err
	}
	if err := plan.ChargeFirst(); err != nil {
		return err
	}
	p.streamBulk(ctx, plan, rows, format, "")
	return nil
}

// streamBulk answers 200 and streams the results as the rows are decided.
// The request body is read from inside the response writer, a chunk ahead
// of the answer, so a client must read the answer while it sends (HTTP/1.1
// is full duplex; curl and Go's client do). attachment, when set, makes a
// browser save the answer under that name.
func (p *Portal) streamBulk(ctx *fasthttp.RequestCtx, plan *BulkPlan, rows BulkRowReader, format, attachment string) {
	ctx.SetStatusCode(http.StatusOK)
	switch format {
	case FormatNDJSON:
		ctx.SetContentType("application/x-ndjson")
	case FormatCSV:
		ctx.SetContentType("text/csv; charset=utf-8")
	default:
		ctx.SetContentType("application/json")
	}
	ctx.Response.Header.Set("Cache-Control", "no-store")
	if attachment != "" {
		ctx.Response.Header.Set("Content-Disposition", `attachment; filename="`+attachment+`"`)
	}
	ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
		extend := func() {
			if c := ctx.Conn(); c != nil {
				_ = c.SetWriteDeadline(time.Now().Add(bulkWriteDeadline))
			}
		}
		extend()
		out := newBulkWriter(format, w, plan.BatchID())
		sum, err := plan.Run(ctx, rows, func(r BulkResult) error {
			if err := out.row(r); err != nil {
				return err
			}
			if r.Row%BulkChunkRows == 0 {
				extend()
				return w.Flush()
			}
			return nil
		})
		if err != nil && apierr.As(err).Status >= 500 {
			slog.Error("bulk bundles stopped", "batch_rows", sum.Rows, "err", err.Error())
		}
		_ = out.end(sum)
		_ = w.Flush()
	})
}

// bulkWriter writes one answer format.
type bulkWriter interface {
	row(BulkResult) error
	end(BulkSummary) error
}

func newBulkWriter(format string, w *bufio.Writer, batchID string) bulkWriter {
	switch format {
	case FormatNDJSON:
		return &ndjsonWriter{w: w}
	case FormatCSV:
		c := csv.NewWriter(w)
		return &csvWriter{c: c, w: w}
	}
	return &jsonWriter{w: w, batchID: batchID}
}

type ndjsonWriter struct{ w *bufio.Writer }

func (n *ndjsonWriter) row(r BulkResult) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	n.w.Write(b)
	return n.w.WriteByte('\n')
}

func (n *ndjsonWriter) end(s BulkSummary) error {
	b, _ := json.Marshal(map[string]BulkSummary{"summary": s})
	n.w.Write(b)
	return n.w.WriteByte('\n')
}

// jsonWriter writes {"batchId", "results": [...], "summary": {...}}, one
// result at a time.
type jsonWriter struct {
	w       *bufio.Writer
	batchID string
	started bool
}

func (j *jsonWriter) start() {
	if !j.started {
		j.started = true
		id, _ := json.Marshal(j.batchID)
		fmt.Fprintf(j.w, `{"batchId":%s,"results":[`, id)
	}
}

func (j *jsonWriter) row(r BulkResult) error {
	sep := ","
	if !j.started {
		sep = ""
	}
	j.start()
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	j.w.WriteString(sep + "\n")
	_, err = j.w.Write(b)
	return err
}

func (j *jsonWriter) end(s BulkSummary) error {
	j.start()
	b, _ := json.Marshal(s)
	_, err := fmt.Fprintf(j.w, "\n],\"summary\":%s}\n", b)
	return err
}

// csvColumns is the CSV answer's header. The last record has "end" in the
// row column, complete or incomplete as its status, and the counts (or the
// error that stopped the request) in errorCode and errorMessage.
var csvColumns = []string{"row", "deviceId", "status", "token", "assignedId", "expiresAt", "mefUri", "trustAnchorSha256",
	"trustAnchor", "errorCode", "errorMessage"}

type csvWriter struct {
	c       *csv.Writer
	w       *bufio.Writer
	started bool
}

func (c *csvWriter) start() {
	if !c.started {
		c.started = true
		_ = c.c.Write(csvColumns)
	}
}

func (c *csvWriter) row(r BulkResult) error {
	c.start()
	rec := make([]string, len(csvColumns))
	rec[0], rec[1], rec[2] = strconv.Itoa(r.Row), cellText(r.DeviceID), r.Status
	if b := r.Bundle; b != nil {
		rec[3], rec[4], rec[5], rec[6], rec[7], rec[8] = b.Token, b.AssignedID, b.ExpiresAt.UTC().Format(time.RFC3339), b.MEFURI, b.TrustAnchorSHA256, b.TrustAnchor
	}
	if e := r.Error; e != nil {
		rec[9], rec[10] = e.Code, e.Message
	}
	if err := c.c.Write(rec); err != nil {
		return err
	}
	c.c.Flush()
	return c.c.Error()
}

func (c *csvWriter) end(s BulkSummary) error {
	c.start()
	rec := make([]string, len(csvColumns))
	rec[0], rec[2] = "end", "incomplete"
	if s.Complete {
		rec[2] = "complete"
	}
	rec[10] = fmt.Sprintf("rows=%d issued=%d replayed=%d refused=%d", s.Rows, s.Issued, s.Replayed, s.Refused)
	if s.Error != nil {
		rec[9], rec[10] = s.Error.Code, s.Error.Message
	}
	_ = c.c.Write(rec)
	c.c.Flush()
	return c.c.Error()
}

// cellText keeps a refused row's device ID, which is whatever the client
// sent, from being read as a formula by a spreadsheet that opens the
// download (OWASP "CSV injection"): such a cell gets a leading quote.
func cellText(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}
