package portal

import (
	"bufio"
	"bytes"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/credfactory/credfactory/apierr"
	"github.com/credfactory/credfactory/crlreason"
	"github.com/credfactory/credfactory/httpapi"
	"github.com/credfactory/credfactory/store"
	"github.com/skip2/go-qrcode"
	"github.com/valyala/fasthttp"
)

// The pages are server-rendered with html/template (which escapes every
// value for its context) and use no script at all: the Content-Security-
// Policy below forbids scripts, inline styles and foreign frames, forms may
// only post to the portal itself, and images are the portal's own or data:
// URIs (the QR code). Every POST carries the session's CSRF token in a
// hidden field named "csrf", and must come from the portal's own origin.

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

const (
	contentSecurityPolicy = "default-src 'self'; script-src 'none'; img-src 'self' data:; style-src 'self'; " +
		"form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
	// devicesPerPage is one page of the device list.
	devicesPerPage = 50
	// rejectedShown is how many refused rows an upload report shows.
	rejectedShown = 200
	// qrModulePixels is the size of one QR module in the PNG.
	qrModulePixels = 4
)

var pageTemplates = parsePageTemplates()

var pageFuncs = template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04:05 UTC")
	},
	"whenp": func(t *time.Time) string {
		if t == nil {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04:05 UTC")
	},
	"str": func(s *string) string {
		if s == nil {
			return ""
		}
		return *s
	},
	"hex":    hexString,
	"has":    func(b []byte) bool { return len(b) > 0 },
	"join":   func(s []string) string { return strings.Join(s, " ") },
	"member": func(s []string, v string) bool { return slices.Contains(s, v) },
	"detail": func(d map[string]any) string {
		keys := make([]string, 0, len(d))
		for k := range d {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, 0, len(keys))
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s=%v", k, d[k]))
		}
		return strings.Join(parts, " ")
	},
}

// parsePageTemplates gives every page its own template set: the layout plus
// the page, whose "title" and "content" blocks fill the layout.
func parsePageTemplates() map[string]*template.Template {
	layout := template.Must(template.New("layout.html").Funcs(pageFuncs).ParseFS(templateFS, "templates/layout.html"))
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		panic(err)
	}
	out := map[string]*template.Template{}
	for _, name := range names {
		base := path.Base(name)
		if base == "layout.html" {
			continue
		}
		t := template.Must(layout.Clone())
		out[strings.TrimSuffix(base, ".html")] = template.Must(t.ParseFS(templateFS, name))
	}
	return out
}

// PageRoutes is the server-rendered web UI.
func (p *Portal) PageRoutes() []Route {
	return append([]Route{
		{Method: "GET", Pattern: "/", Handler: page(func(ctx *fasthttp.RequestCtx) error { redirect(ctx, "/devices"); return nil })},
		{Method: "GET", Pattern: "/static/{file}", Handler: page(staticFile)},
		{Method: "GET", Pattern: "/login", Handler: page(p.pageLogin)},
		{Method: "POST", Pattern: "/login", Handler: page(p.pageLoginPost)},
		{Method: "POST", Pattern: "/logout", Handler: page(p.pageLogout)},
		{Method: "GET", Pattern: "/devices", Handler: page(p.pageDevices)},
		{Method: "GET", Pattern: "/devices/{deviceId}", Handler: page(p.pageDevice)},
		{Method: "POST", Pattern: "/devices/{deviceId}/enrol", Handler: page(p.pageEnrol)},
		{Method: "POST", Pattern: "/devices/{deviceId}/release", Handler: page(p.pageRelease)},
		{Method: "POST", Pattern: "/devices/{deviceId}/revoke", Handler: page(p.pageRevoke)},
		{Method: "POST", Pattern: "/devices/{deviceId}/node-id", Handler: page(p.pageNodeID), MaxBody: maxNodeIDBody},
		{Method: "POST", Pattern: "/claim", Handler: page(p.pageClaim)},
		{Method: "POST", Pattern: "/handovers", Handler: page(p.pageHandOver)},
		{Method: "GET", Pattern: "/upload", Handler: page(p.pageUpload)},
		// The upload streams: its CSRF token is the form's first part.
		{Method: "POST", Pattern: "/upload", Handler: page(p.pageUploadPost), Stream: true, MaxBody: MaxUploadBytes},
		{Method: "GET", Pattern: "/obfs", Handler: page(p.pageOBFs)},
		{Method: "POST", Pattern: "/obfs", Handler: page(p.pageOBFsPost)},
		{Method: "GET", Pattern: "/api-keys", Handler: page(p.pageAPIKeys)},
		{Method: "POST", Pattern: "/api-keys", Handler: page(p.pageAPIKeysPost)},
		{Method: "POST", Pattern: "/api-keys/{keyId}/revoke", Handler: page(p.pageRevokeAPIKey)},
	}, p.bulkPageRoutes()...)
}

// view is what every page template gets; Data is the page's own.
type view struct {
	Title  string
	Nav    string
	User   *store.Stakeholder
	CSRF   string
	Notice string
	Error  string
	Data   any
}

func newView(who *Principal, title, nav string, data any) view {
	v := view{Title: title, Nav: nav, Data: data}
	if who != nil {
		st := who.Stakeholder
		v.User = &st
		if who.Session != nil {
			v.CSRF = who.Session.CSRF
		}
	}
	return v
}

var (
	errCrossOrigin = apierr.New(http.StatusForbidden, "cross_origin", "this form was posted from another site: open the portal itself and try again")
	errNoFile      = apierr.New(http.StatusBadRequest, "no_file", "choose a file to upload")
)

// page turns a page handler's error into an HTML page (never the JSON
// error), and sets the security headers on every answer.
func page(h func(ctx *fasthttp.RequestCtx) error) func(ctx *fasthttp.RequestCtx) error {
	return func(ctx *fasthttp.RequestCtx) error {
		hdr := &ctx.Response.Header
		hdr.Set("Content-Security-Policy", contentSecurityPolicy)
		hdr.Set("X-Content-Type-Options", "nosniff")
		hdr.Set("Referrer-Policy", "no-referrer")
		hdr.Set("X-Frame-Options", "DENY")
		hdr.Set("Cache-Control", "no-store")
		if err := h(ctx); err != nil {
			errorPage(ctx, err)
		}
		return nil
	}
}

// errorPage answers a failed page request. A GET without a live session is
// sent to the login page; a POST without one gets a 401 page (its form is
// not replayed after logging in).
func errorPage(ctx *fasthttp.RequestCtx, err error) {
	e := apierr.As(err)
	if e.Status >= 500 {
		slog.Error("page failed", "path", string(ctx.Path()), "status", e.Status, "err", e.Error())
	}
	if e.Status == http.StatusUnauthorized && (ctx.IsGet() || ctx.IsHead()) {
		if e.Code == "session_expired" {
			redirect(ctx, "/login?m=expired")
		} else {
			redirect(ctx, "/login")
		}
		return
	}
	title, msg := http.StatusText(e.Status), e.Message
	switch {
	case e.Status == http.StatusUnauthorized:
		title, msg = "Not logged in", "You are not logged in, or your session has ended. Log in again; nothing was changed."
		if e.Code == "stakeholder_disabled" {
			msg = e.Message
		}
	case e.Code == "csrf":
		title, msg = "Form expired", "The form's security token (CSRF) is missing or wrong, so nothing was changed. Reload the page and submit the form again."
	}
	if e.RetryAfter > 0 {
		ctx.Response.Header.Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	render(ctx, e.Status, "error", view{Title: title, Data: struct {
		Status  int
		Message string
		LogIn   bool
	}{e.Status, msg, e.Status == http.StatusUnauthorized}})
}

func render(ctx *fasthttp.RequestCtx, status int, name string, v view) {
	t, ok := pageTemplates[name]
	if !ok {
		panic("portal: no page template " + name)
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", v); err != nil {
		slog.Error("render page", "page", name, "err", err.Error())
		ctx.SetStatusCode(http.StatusInternalServerError)
		ctx.SetContentType("text/plain; charset=utf-8")
		ctx.SetBodyString("internal error")
		return
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType("text/html; charset=utf-8")
	ctx.SetBody(buf.Bytes())
}

func redirect(ctx *fasthttp.RequestCtx, to string) {
	ctx.Response.Header.Set("Location", to)
	ctx.SetStatusCode(http.StatusSeeOther)
}

// sameOrigin reports whether a POST came from the portal's own pages. A
// browser says where a request comes from in Sec-Fetch-Site and Origin;
// either one naming another site refuses it. Origin is "null" on our own
// forms too, because the pages' Referrer-Policy is no-referrer: then
// Sec-Fetch-Site must vouch for it. A request with neither header is not
// from a browser form and may pass (it still needs a session and a CSRF
// token wherever the page needs them).
func sameOrigin(ctx *fasthttp.RequestCtx) bool {
	origin := string(ctx.Request.Header.Peek("Origin"))
	site := string(ctx.Request.Header.Peek("Sec-Fetch-Site"))
	switch site {
	case "", "same-origin", "none":
	default:
		return false
	}
	switch origin {
	case "":
		return true
	case "null":
		return site == "same-origin" || site == "none"
	}
	return origin == "https://"+string(ctx.Host())
}

// pageAuth finds the logged-in stakeholder. Pages are for browsers: only
// the session cookie counts (an Authorization header is ignored, so an API
// key never stands in for the CSRF token). POSTs must also be same-origin.
func (p *Portal) pageAuth(ctx *fasthttp.RequestCtx) (Principal, error) {
	return p.pageAuthWith(ctx, func() []byte { return ctx.PostArgs().Peek("csrf") })
}

func (p *Portal) pageAuthWith(ctx *fasthttp.RequestCtx, formCSRF func() []byte) (Principal, error) {
	if !ctx.IsGet() && !ctx.IsHead() && !sameOrigin(ctx) {
		return Principal{}, errCrossOrigin
	}
	ctx.Request.Header.Del("Authorization")
	who, err := p.authenticate(ctx, false, formCSRF)
	if err != nil {
		return Principal{}, err
	}
	if who.Via != "session" {
		return Principal{}, errUnauthenticated
	}
	return who, nil
}

// multipartPageAuth opens a page form posted as multipart/form-data and
// authenticates it. The body is never held whole, so the CSRF token cannot
// be looked up by name: the form puts it first, and a form whose first part
// is not a valid token is refused before anything else is read. what names
// the form in the error a body of another type gets.
func (p *Portal) multipartPageAuth(ctx *fasthttp.RequestCtx, what string) (*multipart.Reader, Principal, error) {
	body := ctx.RequestBodyStream()
	if body == nil { // a server that buffers bodies
		body = bytes.NewReader(ctx.PostBody())
	}
	mt, params, err := mime.ParseMediaType(string(ctx.Request.Header.ContentType()))
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		// Nothing is read or changed: say what the form must be.
		return nil, Principal{}, apierr.New(http.StatusBadRequest, "bad_upload", "Send the "+what+" as multipart/form-data, with the CSRF token first.")
	}
	mr := multipart.NewReader(body, params["boundary"])
	who, err := p.pageAuthWith(ctx, func() []byte {
		part, err := mr.NextPart()
		if err != nil || part.FormName() != "csrf" {
			return nil
		}
		token, _ := io.ReadAll(io.LimitReader(part, 256))
		return token
	})
	if err != nil {
		return nil, Principal{}, err
	}
	return mr, who, nil
}

// nextFormPart is mr.NextPart with its errors as a page form answers them:
// the form ending before its file, a body over the limit, or a body that is
// not well-formed multipart.
func nextFormPart(mr *multipart.Reader) (*multipart.Part, error) {
	part, err := mr.NextPart()
	switch {
	case err == nil:
		return part, nil
	case errors.Is(err, io.EOF):
		return nil, errNoFile
	case errors.Is(err, apierr.BodyTooLarge):
		return nil, apierr.BodyTooLarge
	default:
		return nil, apierr.New(http.StatusBadRequest, "bad_upload", "The form could not be read: "+err.Error())
	}
}

func staticFile(ctx *fasthttp.RequestCtx) error {
	name := httpapi.Param(ctx, "file")
	b, err := staticFS.ReadFile("static/" + name)
	if err != nil || strings.Contains(name, "/") {
		return apierr.New(http.StatusNotFound, "not_found", "no such file")
	}
	ct := mime.TypeByExtension(path.Ext(name))
	if ct == "" {
		ct = "application/octet-stream"
	}
	ctx.Response.Header.Set("Cache-Control", "public, max-age=3600")
	ctx.SetContentType(ct)
	ctx.SetBody(b)
	return nil
}

// Login.

var loginMessages = map[string]string{
	"expired": "Your session has ended: log in again.",
	"bye":     "You have logged out.",
}

type loginData struct{ Name string }

func (p *Portal) pageLogin(ctx *fasthttp.RequestCtx) error {
	v := newView(nil, "Log in", "", loginData{})
	v.Notice = loginMessages[string(ctx.QueryArgs().Peek("m"))]
	render(ctx, http.StatusOK, "login", v)
	return nil
}

func (p *Portal) pageLoginPost(ctx *fasthttp.RequestCtx) error {
	// No session yet, so no CSRF token: the request must be same-origin.
	if !sameOrigin(ctx) {
		return errCrossOrigin
	}
	args := ctx.PostArgs()
	name := strings.TrimSpace(string(args.Peek("name")))
	// Rate limits per source and per account name before Login hashes
	// anything: a login flood costs map lookups, not argon2 (README "Rate
	// limits").
	cookie, sess, err := "", store.Session{}, p.cfg.Limits.CheckLogin(ctx, name)
	if err == nil {
		cookie, sess, err = p.Login(ctx, p.cfg.Limits.Source(ctx), name, string(args.Peek("password")))
	}
	if err != nil {
		e := apierr.As(err)
		if e.Status >= 500 {
			return err
		}
		if e.RetryAfter > 0 {
			ctx.Response.Header.Set("Retry-After", strconv.Itoa(e.RetryAfter))
		}
		v := newView(nil, "Log in", "", loginData{Name: name})
		switch e.Code {
		case "bad_credentials":
			v.Error = "Wrong name or password."
		case "too_many_attempts":
			v.Error = fmt.Sprintf("Too many failed logins: wait %d seconds, then try again.", e.RetryAfter)
		default:
			v.Error = e.Message
		}
		render(ctx, e.Status, "login", v)
		return nil
	}
	SetSessionCookie(ctx, cookie, sess.ExpiresAt)
	redirect(ctx, "/devices")
	return nil
}

func (p *Portal) pageLogout(ctx *fasthttp.RequestCtx) error {
	_, err := p.pageAuth(ctx)
	if e := apierr.As(err); err != nil && e.Status != http.StatusUnauthorized {
		return err // a missing CSRF token must not log anyone out
	}
	if err == nil {
		if err := p.Logout(ctx, string(ctx.Request.Header.Cookie(SessionCookie))); err != nil {
			return err
		}
	}
	SetSessionCookie(ctx, "", time.Time{})
	redirect(ctx, "/login?m=bye")
	return nil
}

// Devices.

type devicesData struct {
	Devices        []store.Device
	Prefix, State  string
	After, Next    string
	States         []string
	IsManufacturer bool
	// CanClaim: a subscriber or installer may claim an unowned device by
	// its claim code (a released one, say).
	CanClaim bool
}

func (p *Portal) pageDevices(ctx *fasthttp.RequestCtx) error {
	who, err := p.pageAuth(ctx)
	if err != nil {
		return err
	}
	q := ctx.QueryArgs()
	v, status, err := p.devicesView(ctx, who, store.DeviceFilter{
		State: string(q.Peek("state")), IDPrefix: strings.TrimSpace(string(q.Peek("prefix"))), After: string(q.Peek("after"))})
	if err != nil {
		return err
	}
	if n, err := strconv.Atoi(string(q.Peek("handedOver"))); err == nil && v.Error == "" {
		v.Notice = fmt.Sprintf("%d device(s) handed over.", n)
	}
	if id := string(q.Peek("released")); id != "" && v.Error == "" {
		v.Notice = fmt.Sprintf("Device %s was released: its credentials are revoked and it is no longer yours.", id)
	}
	render(ctx, status, "devices", v)
	return nil
}

// devicesView lists one page of devices. A bad filter is a 400 page that
// says why, not an error page.
func (p *Portal) devicesView(ctx *fasthttp.RequestCtx, who Principal, f store.DeviceFilter) (view, int, error) {
	d := &devicesData{
		Prefix: f.IDPrefix, State: f.State, After: f.After,
		States:         []string{store.DevicePreEnrolled, store.DeviceTokenIssued, store.DeviceEnrolled, store.DeviceRevoked},
		IsManufacturer: who.Stakeholder.Role == store.RoleManufacturer,
		CanClaim:       requireRole(who, store.RoleSubscriber, store.RoleInstaller) == nil,
	}
	v := newView(&who, "Devices", "devices", d)
	if len(f.IDPrefix) > 128 {
		v.Error = "The search is too long: device IDs have at most 128 characters."
		return v, http.StatusBadRequest, nil
	}
	// One more than a page says whether there is a next page, without a
	// count: keyset paging stays as fast on the last page as on the first.
	f.Limit = devicesPerPage + 1
	ds, err := p.Devices(ctx, who, f)
	if err != nil {
		e := apierr.As(err)
		if e.Status != http.StatusBadRequest {
			return v, 0, err
		}
		v.Error = e.Message
		return v, e.Status, nil
	}
	if len(ds) > devicesPerPage {
		ds = ds[:devicesPerPage]
		d.Next = Cursor(ds[len(ds)-1])
	}
	d.Devices = ds
	return v, http.StatusOK, nil
}

func (p *Portal) pageHandOver(ctx *fasthttp.RequestCtx) error {
	who, err := p.pageAuth(ctx)
	if err != nil {
		return err
	}
	args := ctx.PostArgs()
	ids := strings.FieldsFunc(string(args.Peek("deviceIds")), func(r rune) bool {
		return r == ',' || r == ';' || r == ' ' || r == '\n' || r == '\r' || r == '\t'
	})
	n, err := p.HandOver(ctx, who, strings.TrimSpace(string(args.Peek("subscriber"))), ids)
	if err != nil {
		e := apierr.As(err)
		if e.Status >= 500 || e.Status == http.StatusForbidden {
			return err
		}
		return p.devicesError(ctx, who, "Nothing was handed over: ", e)
	}
	redirect(ctx, "/devices?handedOver="+strconv.Itoa(n))
	return nil
}

// Device detail and enrolment.

type deviceData struct {
	DeviceDetail
	OBFs     []store.OBF
	OBFNames map[string]string
	CanEnrol bool
	OBFID    string
	// CanRelease: the owner or an sp-admin may release the device;
	// CanRevoke: it has active credentials the caller may revoke.
	CanRelease, CanRevoke bool
	// CanSetNodeID: the caller may bind the device's Node-ID (nodeid.go).
	CanSetNodeID bool
	Active       []store.Credential
	Reasons      []string
}

func (p *Portal) deviceView(ctx *fasthttp.RequestCtx, who Principal, id string) (view, error) {
	det, err := p.Detail(ctx, who, id)
	if err != nil {
		return view{}, err
	}
	obfs, err := p.OBFs(ctx, who)
	if err != nil {
		return view{}, err
	}
	d := &deviceData{DeviceDetail: det, OBFNames: map[string]string{}}
	for _, o := range obfs {
		d.OBFNames[o.ID] = o.Name
		if o.DisabledAt == nil && o.StakeholderID == det.Device.Tenant {
			d.OBFs = append(d.OBFs, o)
		}
	}
	d.CanEnrol = requireRole(who, store.RoleSubscriber, store.RoleInstaller, store.RoleManufacturer) == nil &&
		det.Device.State != store.DeviceRevoked
	d.CanRelease = who.Via != "obf" && requireRole(who, store.RoleSubscriber, store.RoleManufacturer, store.RoleSPAdmin) == nil
	for _, c := range det.Credentials {
		if c.Status == store.StatusActive {
			d.Active = append(d.Active, c)
		}
	}
	d.CanRevoke = who.Via != "obf" && len(d.Active) > 0
	d.CanSetNodeID = who.Via != "obf"
	d.Reasons = crlreason.Names()
	return newView(&who, "Device "+det.Device.ID, "devices", d), nil
}

func (p *Portal) pageDevice(ctx *fasthttp.RequestCtx) error {
	who, err := p.pageAuth(ctx)
	if err != nil {
		return err
	}
	v, err := p.deviceView(ctx, who, httpapi.Param(ctx, "deviceId"))
	if err != nil {
		return err
	}
	render(ctx, http.StatusOK, "device", v)
	return nil
}

type bundleData struct {
	DeviceID string
	Bundle
	JSON    string
	QR      template.URL
	QRError string
}

func (p *Portal) pageEnrol(ctx *fasthttp.RequestCtx) error {
	who, err := p.pageAuth(ctx)
	if err != nil {
		return err
	}
	id := httpapi.Param(ctx, "deviceId")
	args := ctx.PostArgs()
	req := EnrolRequest{
		Proof:          Proof{ClaimCode: strings.TrimSpace(string(args.Peek("claimCode")))},
		OBFID:          strings.TrimSpace(string(args.Peek("obfId"))),
		AssignedIDType: string(args.Peek("assignedIdType")),
	}
	var b Bundle
	if req.Proof.ClaimCode == "" {
		err = apierr.New(http.StatusBadRequest, "bad_proof", "Enter the claim code printed on the device's label.")
	} else {
		b, err = p.Enrol(ctx, who, id, req)
	}
	if err != nil {
		return p.deviceError(ctx, who, id, req.OBFID, "No token was issued: ", err)
	}
	return p.renderBundle(ctx, who, id, b)
}

func (p *Portal) renderBundle(ctx *fasthttp.RequestCtx, who Principal, id string, b Bundle) error {
	raw, err := json.Marshal(b)
	if err != nil {
		return err
	}
	d := &bundleData{DeviceID: id, Bundle: b, JSON: string(raw)}
	// The QR code is the bundle JSON itself, for an OBD to scan.
	if png, err := qrcode.Encode(d.JSON, qrcode.Medium, -qrModulePixels); err != nil {
		d.QRError = "The bundle is too large for a QR code: copy the JSON instead."
	} else {
		d.QR = template.URL("data:image/png;base64," + base64.StdEncoding.EncodeToString(png))
	}
	render(ctx, http.StatusOK, "bundle", newView(&who, "Enrolment bundle", "devices", d))
	return nil
}

// Release, revocation and claims (ownership transfer).

func (p *Portal) pageRelease(ctx *fasthttp.RequestCtx) error {
	who, err := p.pageAuth(ctx)
	if err != nil {
		return err
	}
	id := httpapi.Param(ctx, "deviceId")
	args := ctx.PostArgs()
	out, err := p.Release(ctx, who, id, ReleaseRequest{Reason: string(args.Peek("reason")), RevocationReason: string(args.Peek("revocationReason"))})
	if err != nil {
		return p.deviceError(ctx, who, id, "", "The device was not released: ", err)
	}
	// The new claim code is shown on this answer only (not a redirect: a
	// URL would put it in history and logs).
	render(ctx, http.StatusOK, "released", newView(&who, "Device released", "devices",
		map[string]any{"DeviceID": id, "ClaimCode": out.ClaimCode, "Revoked": len(out.Revoked)}))
	return nil
}

func (p *Portal) pageRevoke(ctx *fasthttp.RequestCtx) error {
	who, err := p.pageAuth(ctx)
	if err != nil {
		return err
	}
	id := httpapi.Param(ctx, "deviceId")
	args := ctx.PostArgs()
	req := RevokeRequest{CredentialID: strings.TrimSpace(string(args.Peek("credentialId"))), Reason: string(args.Peek("reason"))}
	for _, raw := range strings.FieldsFunc(string(args.Peek("suids")), func(r rune) bool { return r == ',' || r == ' ' }) {
		n, err := strconv.Atoi(raw)
		if err != nil {
			return p.deviceError(ctx, who, id, "", "Nothing was revoked: ", apierr.New(http.StatusBadRequest, "bad_suid", "usage codes are numbers such as 22 or 42, separated by commas"))
		}
		req.SUIDs = append(req.SUIDs, n)
	}
	if _, err := p.Revoke(ctx, who, id, req); err != nil {
		return p.deviceError(ctx, who, id, "", "Nothing was revoked: ", err)
	}
	redirect(ctx, "/devices/"+url.PathEscape(id))
	return nil
}

// deviceError shows the device page again with what went wrong, or the
// error page where there is no device page to show.
func (p *Portal) deviceError(ctx *fasthttp.RequestCtx, who Principal, id, obfID, prefix string, err error) error {
	e := apierr.As(err)
	if e.Status >= 500 || e.Code == "device_not_found" || e.Code == "forbidden" {
		return err
	}
	v, verr := p.deviceView(ctx, who, id)
	if verr != nil {
		return verr
	}
	v.Data.(*deviceData).OBFID = obfID // the form keeps the OBF chosen
	showError(ctx, &v, prefix, e)
	render(ctx, e.Status, "device", v)
	return nil
}

// devicesError shows the devices page again with what went wrong.
func (p *Portal) devicesError(ctx *fasthttp.RequestCtx, who Principal, prefix string, e *apierr.Error) error {
	v, _, verr := p.devicesView(ctx, who, store.DeviceFilter{})
	if verr != nil {
		return verr
	}
	showError(ctx, &v, prefix, e)
	render(ctx, e.Status, "devices", v)
	return nil
}

// showError puts e on a page being shown again, with its Retry-After (a
// lockout or a rate limit) for the browser.
func showError(ctx *fasthttp.RequestCtx, v *view, prefix string, e *apierr.Error) {
	v.Error = prefix + e.Message
	if e.RetryAfter > 0 {
		ctx.Response.Header.Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
}

// pageClaim takes an unowned device (a released one, say) by its claim
// code: the same Enrol as the device page, for a device the caller cannot
// see yet.
func (p *Portal) pageClaim(ctx *fasthttp.RequestCtx) error {
	who, err := p.pageAuth(ctx)
	if err != nil {
		return err
	}
	args := ctx.PostArgs()
	id := strings.TrimSpace(string(args.Peek("deviceId")))
	req := EnrolRequest{Proof: Proof{ClaimCode: strings.TrimSpace(string(args.Peek("claimCode")))}}
	var b Bundle
	if id == "" || req.Proof.ClaimCode == "" {
		err = apierr.New(http.StatusBadRequest, "bad_proof", "Enter the device ID and the claim code printed on the device's label.")
	} else {
		b, err = p.Enrol(ctx, who, id, req)
	}
	if err != nil {
		e := apierr.As(err)
		if e.Status >= 500 {
			return err
		}
		return p.devicesError(ctx, who, "The device was not claimed: ", e)
	}
	return p.renderBundle(ctx, who, id, b)
}

// Bulk upload.

type uploadData struct {
	CanUpload bool
	FileName  string
	Format    string
	Report    *UploadReport
	Shown     []RowError
	Hidden    int
	Capped    bool
}

func (p *Portal) pageUpload(ctx *fasthttp.RequestCtx) error {
	who, err := p.pageAuth(ctx)
	if err != nil {
		return err
	}
	render(ctx, http.StatusOK, "upload", newView(&who, "Upload devices", "upload",
		&uploadData{CanUpload: who.Stakeholder.Role == store.RoleManufacturer}))
	return nil
}

// pageUploadPost reads the multipart form as it streams in; the file is
// read only once the form's first part, its CSRF token, has passed.
func (p *Portal) pageUploadPost(ctx *fasthttp.RequestCtx) error {
	mr, who, err := p.multipartPageAuth(ctx, "upload form")
	if err != nil {
		return err
	}
	d := &uploadData{CanUpload: who.Stakeholder.Role == store.RoleManufacturer}
	v := newView(&who, "Upload devices", "upload", d)
	fail := func(err error) error {
		e := apierr.As(err)
		if e.Status >= 500 {
			return err
		}
		v.Error = e.Message
		render(ctx, e.Status, "upload", v)
		return nil
	}
	if !d.CanUpload {
		return fail(apierr.New(http.StatusForbidden, "forbidden", "Only a manufacturer pre-enrols devices."))
	}
	release, err := p.uploadSlot()
	if err != nil {
		return fail(err)
	}
	defer release()
	httpapi.BeginStream(ctx)
	for {
		part, err := nextFormPart(mr)
		if err != nil {
			return fail(err)
		}
		switch part.FormName() {
		case "format":
			b, _ := io.ReadAll(io.LimitReader(part, 16))
			d.Format = strings.TrimSpace(string(b))
		case "file":
			d.FileName = part.FileName()
			if d.FileName == "" {
				return fail(errNoFile)
			}
			rows, err := uploadRows(part, d.Format, d.FileName, part.Header.Get("Content-Type"))
			if err != nil {
				return fail(err)
			}
			report, err := p.Upload(ctx, who, rows)
			d.Report = &report
			d.Shown = report.Rejected
			if len(d.Shown) > rejectedShown {
				d.Shown, d.Hidden = d.Shown[:rejectedShown], len(d.Shown)-rejectedShown
			}
			d.Capped = len(report.Rejected) >= maxRowsErrored
			if err != nil {
				// The stream broke: the rows before the break are stored
				// (re-uploading the fixed file is idempotent).
				e := apierr.As(err)
				if e.Status < 500 {
					v.Error = "The upload stopped: " + e.Message + ". Rows before it were stored; fix the file and upload it again."
					render(ctx, e.Status, "upload", v)
					return nil
				}
				return err
			}
			v.Notice = fmt.Sprintf("Upload of %s done.", d.FileName)
			render(ctx, http.StatusOK, "upload", v)
			return nil
		}
	}
}

// uploadRows picks the parser: the format the form chose, else the file's
// extension, else its content type, else its first byte ('[' is JSON).
func uploadRows(r io.Reader, format, fileName, contentType string) (RowReader, error) {
	br := bufio.NewReader(r)
	switch format {
	case "csv", "json":
	case "", "auto":
		switch strings.ToLower(path.Ext(fileName)) {
		case ".csv":
			format = "csv"
		case ".json":
			format = "json"
		default:
			mt, _, _ := mime.ParseMediaType(contentType)
			switch mt {
			case "text/csv":
				format = "csv"
			case "application/json":
				format = "json"
			default:
				format = "csv"
				for {
					c, _, err := br.ReadRune()
					if err != nil {
						break
					}
					if c == '\ufeff' || c == ' ' || c == '\t' || c == '\r' || c == '\n' {
						continue
					}
					if c == '[' {
						format = "json"
					}
					_ = br.UnreadRune()
					break
				}
			}
		}
	default:
		return nil, apierr.New(http.StatusBadRequest, "bad_format", "The format is csv or json.")
	}
	if format == "json" {
		return JSONRows(br)
	}
	return CSVRows(br)
}

// OBF registry.

type obfRow struct {
	store.OBF
	Owner string
}

type obfsData struct {
	IsAdmin    bool
	OBFs       []obfRow
	Form       OBFRequest
	DNS, URIs  string
	Registered *RegisteredOBF
}

func (p *Portal) obfsView(ctx *fasthttp.RequestCtx, who Principal, d *obfsData) (view, error) {
	d.IsAdmin = who.Stakeholder.Role == store.RoleSPAdmin
	obfs, err := p.OBFs(ctx, who)
	if err != nil {
		return view{}, err
	}
	owners := map[string]string{}
	for _, o := range obfs {
		name, ok := owners[o.StakeholderID]
		if !ok {
			name = o.StakeholderID
			if st, err := p.st.StakeholderBy(ctx, "id", o.StakeholderID); err == nil {
				name = st.Name
			}
			owners[o.StakeholderID] = name
		}
		d.OBFs = append(d.OBFs, obfRow{OBF: o, Owner: name})
	}
	return newView(&who, "On-boarding functions", "obfs", d), nil
}

func (p *Portal) pageOBFs(ctx *fasthttp.RequestCtx) error {
	who, err := p.pageAuth(ctx)
	if err != nil {
		return err
	}
	v, err := p.obfsView(ctx, who, &obfsData{Form: OBFRequest{Kind: store.OBD}})
	if err != nil {
		return err
	}
	render(ctx, http.StatusOK, "obfs", v)
	return nil
}

func (p *Portal) pageOBFsPost(ctx *fasthttp.RequestCtx) error {
	who, err := p.pageAuth(ctx)
	if err != nil {
		return err
	}
	args := ctx.PostArgs()
	split := func(s string) []string {
		return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\r' || r == '\t' })
	}
	d := &obfsData{DNS: string(args.Peek("permittedDnsDomains")), URIs: string(args.Peek("permittedUriDomains"))}
	d.Form = OBFRequest{
		Name: string(args.Peek("name")), Kind: string(args.Peek("kind")), Trusted: len(args.Peek("trusted")) > 0,
		Owner: strings.TrimSpace(string(args.Peek("owner"))), ClientCSR: strings.TrimSpace(string(args.Peek("clientCsr"))),
		SubCACSR:            strings.TrimSpace(string(args.Peek("subCaCsr"))),
		PermittedDNSDomains: split(d.DNS), PermittedURIDomains: split(d.URIs),
	}
	reg, rerr := p.RegisterOBF(ctx, who, d.Form)
	status := http.StatusOK
	var msg string
	if rerr != nil {
		e := apierr.As(rerr)
		if e.Status >= 500 {
			return rerr
		}
		status, msg = e.Status, "The OBF was not registered: "+e.Message
	} else {
		d.Registered = &reg
		d.Form, d.DNS, d.URIs = OBFRequest{Kind: store.OBD}, "", ""
	}
	v, err := p.obfsView(ctx, who, d)
	if err != nil {
		return err
	}
	v.Error = msg
	if rerr == nil {
		v.Notice = fmt.Sprintf("Registered %s (%s, %s).", reg.OBF.Name, reg.OBF.Kind, map[bool]string{true: "trusted", false: "untrusted"}[reg.OBF.Trusted])
	}
	render(ctx, status, "obfs", v)
	return nil
}

// API keys.

type apiKeysData struct {
	Keys    []store.APIKey
	NewKey  string
	NewName string
	// Scopes and Default offer the scopes on the form.
	Scopes, Default []string
}

func (p *Portal) apiKeysView(ctx *fasthttp.RequestCtx, who Principal, d *apiKeysData) (view, error) {
	keys, err := p.APIKeys(ctx, who)
	if err != nil {
		return view{}, err
	}
	d.Keys = keys
	d.Scopes, d.Default = AllScopes, DefaultScopes
	return newView(&who, "API keys", "api-keys", d), nil
}

func (p *Portal) pageAPIKeys(ctx *fasthttp.RequestCtx) error {
	who, err := p.pageAuth(ctx)
	if err != nil {
		return err
	}
	v, err := p.apiKeysView(ctx, who, &apiKeysData{})
	if err != nil {
		return err
	}
	if len(ctx.QueryArgs().Peek("revoked")) > 0 {
		v.Notice = "The API key is revoked."
	}
	render(ctx, http.StatusOK, "apikeys", v)
	return nil
}

func (p *Portal) pageAPIKeysPost(ctx *fasthttp.RequestCtx) error {
	who, err := p.pageAuth(ctx)
	if err != nil {
		return err
	}
	name := string(ctx.PostArgs().Peek("name"))
	var scopes []string
	for _, v := range ctx.PostArgs().PeekMulti("scope") {
		scopes = append(scopes, string(v))
	}
	key, k, kerr := p.NewAPIKey(ctx, who, name, scopes...)
	d := &apiKeysData{}
	status := http.StatusOK
	var msg string
	if kerr != nil {
		e := apierr.As(kerr)
		if e.Status >= 500 {
			return kerr
		}
		status, msg = e.Status, "No key was made: "+e.Message
	} else {
		d.NewKey, d.NewName = key, k.Name
	}
	v, err := p.apiKeysView(ctx, who, d)
	if err != nil {
		return err
	}
	v.Error = msg
	render(ctx, status, "apikeys", v)
	return nil
}

func (p *Portal) pageRevokeAPIKey(ctx *fasthttp.RequestCtx) error {
	who, err := p.pageAuth(ctx)
	if err != nil {
		return err
	}
	if _, err := p.RevokeAPIKey(ctx, who, httpapi.Param(ctx, "keyId")); err != nil {
		return err
	}
	redirect(ctx, "/api-keys?revoked=1")
	return nil
}
