package portal

import (
	"bufio"
	"io"
	"mime"
	"net/http"
	"path"
	"strings"

	"github.com/credfactory/credfactory/apierr"
	"github.com/credfactory/credfactory/httpapi"
	"github.com/credfactory/credfactory/store"
	"github.com/valyala/fasthttp"
)

// The bulk bundles page: a file of rows in, a file of bundles out (README
// "Bulk enrolment bundles"). The form carries a batch ID made when the page
// was rendered, so submitting it twice (a reload after a lost answer) gets
// the same tokens back instead of a second set.

type bundlesData struct {
	BatchID      string
	OBFs         []store.OBF
	Manufacturer bool
}

func (p *Portal) bulkPageRoutes() []Route {
	return []Route{
		{Method: "GET", Pattern: "/bundles", Handler: page(p.pageBundles)},
		{Method: "POST", Pattern: "/bundles", Handler: page(p.pageBundlesPost), Stream: true, MaxBody: MaxBulkBytes},
	}
}

func (p *Portal) bundlesView(who Principal, obfs []store.OBF) view {
	return newView(&who, "Enrolment bundles in bulk", "bundles", &bundlesData{BatchID: "page-" + randomToken()[:22], OBFs: obfs,
		Manufacturer: who.Stakeholder.Role == store.RoleManufacturer})
}

func (p *Portal) pageBundles(ctx *fasthttp.RequestCtx) error {
	who, err := p.pageAuth(ctx)
	if err != nil {
		return err
	}
	if err := requireRole(who, store.RoleSubscriber, store.RoleInstaller, store.RoleManufacturer); err != nil {
		return err
	}
	obfs, err := p.OBFs(ctx, who)
	if err != nil {
		return err
	}
	render(ctx, http.StatusOK, "bundles", p.bundlesView(who, obfs))
	return nil
}

// pageBundlesPost reads the multipart form as it streams in: the CSRF token
// first (as on the upload page), then the batch ID, the OBF and the answer
// format, then the file, whose rows are decided as they arrive while the
// answer streams back as a download.
func (p *Portal) pageBundlesPost(ctx *fasthttp.RequestCtx) error {
	mr, who, err := p.multipartPageAuth(ctx, "form")
	if err != nil {
		return err
	}
	fail := func(err error) error {
		e := apierr.As(err)
		if e.Status >= 500 {
			return err
		}
		obfs, _ := p.OBFs(ctx, who)
		v := p.bundlesView(who, obfs)
		v.Error = e.Message
		render(ctx, e.Status, "bundles", v)
		return nil
	}
	if err := requireRole(who, store.RoleSubscriber, store.RoleInstaller, store.RoleManufacturer); err != nil {
		return fail(err)
	}
	// Authenticated (session and CSRF token): the rest of the body may take
	// as long as a large file needs, at the front end's minimum rate.
	httpapi.BeginStream(ctx)
	var req BulkRequest
	format := FormatCSV
	for {
		part, err := nextFormPart(mr)
		if err != nil {
			return fail(err)
		}
		field := func() string {
			b, _ := io.ReadAll(io.LimitReader(part, 256))
			return strings.TrimSpace(string(b))
		}
		switch part.FormName() {
		case "batchId":
			req.BatchID = field()
		case "obfId":
			req.OBFID = field()
		case "format":
			switch f := field(); f {
			case FormatCSV, FormatNDJSON, FormatJSON:
				format = f
			default:
				return fail(apierr.New(http.StatusBadRequest, "bad_format", "The download format is csv, ndjson or json."))
			}
		case "file":
			if part.FileName() == "" {
				return fail(errNoFile)
			}
			plan, err := p.PlanBulk(ctx, who, req)
			if err != nil {
				return fail(err)
			}
			rows, err := BulkRows(bufio.NewReader(part), rowsMediaType(part.FileName(), part.Header.Get("Content-Type")))
			if err != nil {
				return fail(err)
			}
			if err := plan.ChargeFirst(); err != nil {
				return fail(err)
			}
			name := "bundles-" + plan.BatchID() + "." + format
			p.streamBulk(ctx, plan, rows, format, name)
			return nil
		}
	}
}

// rowsMediaType reads a rows file by its extension, else its content type,
// else as CSV.
func rowsMediaType(fileName, contentType string) string {
	switch strings.ToLower(path.Ext(fileName)) {
	case ".json":
		return "application/json"
	case ".ndjson", ".jsonl":
		return "application/x-ndjson"
	case ".csv":
		return "text/csv"
	}
	if mt, _, err := mime.ParseMediaType(contentType); err == nil {
		switch mt {
		case "application/json", "application/x-ndjson":
			return mt
		}
	}
	return "text/csv"
}
