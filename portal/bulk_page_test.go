package portal_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"io"
	"mime/multipart"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/credfactory/credfactory/portal"
	"github.com/credfactory/credfactory/store"
)

var pageBatchField = regexp.MustCompile(`name="batchId" value="([^"]+)"`)

// TestBundlesPage: the bulk bundles form downloads a CSV of bundles; it
// needs the session's CSRF token first and a same-origin post, refuses
// without a file, and a second submission of the same form (a reload after
// a lost answer) gets the same tokens back, not a second set.
func TestBundlesPage(t *testing.T) {
	e := newPageEnv(t)
	ctx := context.Background()
	acme := e.stakeholder(t, "acme-line", store.RoleManufacturer, "correct horse battery staple")
	other := e.stakeholder(t, "other-line", store.RoleManufacturer, "correct horse battery staple")
	for _, u := range []struct {
		who store.Stakeholder
		csv string
	}{{acme, "deviceId\npg-1\npg-2\n"}, {other, "deviceId\npg-other\n"}} {
		rows, _ := portal.CSVRows(strings.NewReader(u.csv))
		if _, err := e.portal.Upload(ctx, portal.Principal{Stakeholder: u.who, Via: "api-key"}, rows); err != nil {
			t.Fatal(err)
		}
	}
	c := e.client(t)
	c.login("acme-line", "correct horse battery staple")
	form := c.get("/bundles")
	token, batch := pageCSRFField.FindStringSubmatch(form.body), pageBatchField.FindStringSubmatch(form.body)
	if form.status != 200 || token == nil || batch == nil || !strings.Contains(form.body, `href="/bundles"`) {
		t.Fatalf("bundles page: %d %s", form.status, form.body)
	}
	file := pageFormPart{"file", "line.csv", "deviceId\npg-1\npg-2\npg-other\n=1+1\n"}
	csrf, batchID := pageFormPart{"csrf", "", token[1]}, pageFormPart{"batchId", "", batch[1]}

	for _, bad := range []struct {
		name   string
		r      pageResponse
		status int
		text   string
	}{
		{"no CSRF token", c.postMultipart("/bundles", batchID, file), 403, "CSRF"},
		{"a wrong CSRF token", c.postMultipart("/bundles", pageFormPart{"csrf", "", "forged"}, batchID, file), 403, "CSRF"},
		{"no file", c.postMultipart("/bundles", csrf, batchID), 400, "choose a file"},
		{"no batch ID", c.postMultipart("/bundles", csrf, file), 400, "Idempotency-Key"},
	} {
		if bad.r.status != bad.status || !strings.Contains(bad.r.body, bad.text) {
			t.Errorf("%s: %d, want %d with %q: %.400s", bad.name, bad.r.status, bad.status, bad.text, bad.r.body)
		}
	}
	if d, _ := e.st.Device(ctx, "pg-1"); d.State != store.DevicePreEnrolled {
		t.Fatalf("a refused form changed pg-1: %s", d.State)
	}

	download := func() [][]string {
		t.Helper()
		r := c.postMultipart("/bundles", csrf, batchID, pageFormPart{"format", "", "csv"}, file)
		if r.status != http.StatusOK || !strings.HasPrefix(r.header.Get("Content-Disposition"), "attachment;") ||
			!strings.HasPrefix(r.header.Get("Content-Type"), "text/csv") {
			t.Fatalf("download: %d %v %.400s", r.status, r.header, r.body)
		}
		recs, err := csv.NewReader(strings.NewReader(r.body)).ReadAll()
		if err != nil || len(recs) != 6 {
			t.Fatalf("downloaded CSV: %v %q", err, recs)
		}
		return recs
	}
	first := download()
	for i, want := range [][2]string{{"issued", ""}, {"issued", ""}, {"refused", "device_not_found"}, {"refused", "bad_device_id"}} {
		if r := first[i+1]; r[2] != want[0] || r[9] != want[1] {
			t.Errorf("row %d: %q, want %s %s", i+1, r, want[0], want[1])
		}
	}
	if first[5][0] != "end" || first[5][2] != "complete" {
		t.Errorf("last record %q", first[5])
	}
	// A spreadsheet opening the download must not run what a client sent.
	if first[4][1] != "'=1+1" {
		t.Errorf("a refused formula-like device ID is written as %q", first[4][1])
	}
	again := download()
	for i := 1; i <= 2; i++ {
		if again[i][2] != "replayed" || again[i][3] != first[i][3] {
			t.Errorf("resubmitted row %d: %q, want the first token replayed", i, again[i])
		}
	}
	// Another site cannot submit it, even with the token.
	if r := postMultipartWith(c, "/bundles", []string{"Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site"}, csrf, batchID, file); r.status != 403 {
		t.Errorf("cross-site post: %d", r.status)
	}
}

// postMultipartWith is postMultipart with request headers (Origin, ...).
func postMultipartWith(c *pageClient, path string, header []string, parts ...pageFormPart) pageResponse {
	c.t.Helper()
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	for _, p := range parts {
		var pw io.Writer
		if p.fileName != "" {
			pw, _ = w.CreateFormFile(p.field, p.fileName)
		} else {
			pw, _ = w.CreateFormField(p.field)
		}
		_, _ = io.WriteString(pw, p.content)
	}
	w.Close()
	req, _ := http.NewRequest("POST", c.env.base+path, &buf)
	req.Header.Set("Content-Type", w.FormDataContentType())
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return c.do(req)
}
