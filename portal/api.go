package portal

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/credfactory/credfactory/apierr"
	"github.com/credfactory/credfactory/httpapi"
	"github.com/credfactory/credfactory/store"
	"github.com/valyala/fasthttp"
)

// Route is one HTTP route; the front end registers it.
type Route = httpapi.Route

// MaxUploadBytes bounds one bulk pre-enrolment: the largest legitimate one
// is 100,000 rows with certificates, and 256 MiB is 100,000 rows of 2.6 KiB
// (an RSA-4096 device certificate in PEM is about 2.2 KiB; ECDSA ones are
// under 1 KiB). The body is parsed as it streams, so the limit bounds the
// time one upload can take, not memory.
const MaxUploadBytes = 256 << 20

// APIRoutes is the JSON API (api/openapi.yaml).
func (p *Portal) APIRoutes() []Route {
	return []Route{
		{Method: "POST", Pattern: "/api/v1/devices", Handler: p.apiUpload, Stream: true, MaxBody: MaxUploadBytes},
		{Method: "GET", Pattern: "/api/v1/devices", Handler: p.apiDevices},
		{Method: "GET", Pattern: "/api/v1/devices/{deviceId}", Handler: p.apiDevice},
		{Method: "POST", Pattern: "/api/v1/devices/{deviceId}/nonce", Handler: p.apiNonce},
		{Method: "POST", Pattern: "/api/v1/devices/{deviceId}/enrolments", Handler: p.apiEnrol},
		{Method: "POST", Pattern: "/api/v1/devices/{deviceId}/release", Handler: p.apiRelease},
		{Method: "POST", Pattern: "/api/v1/devices/{deviceId}/revoke", Handler: p.apiRevoke},
		{Method: "POST", Pattern: "/api/v1/devices/{deviceId}/node-id", Handler: p.apiNodeID, MaxBody: maxNodeIDBody},
		{Method: "POST", Pattern: "/api/v1/handovers", Handler: p.apiHandOver},
		{Method: "POST", Pattern: "/api/v1/bundles", Handler: p.apiBulk, Stream: true, MaxBody: MaxBulkBytes},
		{Method: "POST", Pattern: "/api/v1/obfs", Handler: p.apiRegisterOBF},
		{Method: "GET", Pattern: "/api/v1/obfs", Handler: p.apiOBFs},
		{Method: "POST", Pattern: "/api/v1/obfs/{obfId}/disable", Handler: p.apiDisableOBF},
		{Method: "POST", Pattern: "/api/v1/api-keys", Handler: p.apiNewKey},
		{Method: "GET", Pattern: "/api/v1/api-keys", Handler: p.apiKeys},
		{Method: "POST", Pattern: "/api/v1/api-keys/{keyId}/revoke", Handler: p.apiRevokeKey},
	}
}

func (p *Portal) apiUpload(ctx *fasthttp.RequestCtx) error {
	who, err := p.Authenticate(ctx, false)
	if err != nil {
		return err
	}
	if err := requireRole(who, store.RoleManufacturer); err != nil {
		return err
	}
	if err := requireScope(who, ScopeDevices); err != nil {
		return err
	}
	release, err := p.uploadSlot()
	if err != nil {
		return err
	}
	defer release()
	httpapi.BeginStream(ctx)
	body := ctx.RequestBodyStream()
	if body == nil {
		body = bytes.NewReader(ctx.PostBody())
	}
	mt, _, _ := mime.ParseMediaType(string(ctx.Request.Header.ContentType()))
	var rows RowReader
	switch mt {
	case "application/json":
		rows, err = JSONRows(body)
	case "text/csv":
		rows, err = CSVRows(body)
	default:
		return apierr.New(http.StatusUnsupportedMediaType, "unsupported_media_type", "send application/json or text/csv")
	}
	if err != nil {
		return err
	}
	report, err := p.Upload(ctx, who, rows)
	if err != nil {
		return err
	}
	return httpapi.JSON(ctx, http.StatusOK, report)
}

// DeviceView is a device as the API shows it.
type DeviceView struct {
	DeviceID       string    `json:"deviceId"`
	State          string    `json:"state"`
	AssignedID     string    `json:"assignedId,omitempty"`
	ManufacturerID string    `json:"manufacturerId"`
	OwnerID        string    `json:"ownerId,omitempty"`
	HasClaimCode   bool      `json:"hasClaimCode"`
	DeviceCertSHA  string    `json:"deviceCertSha256,omitempty"`
	NodeID         string    `json:"nodeId,omitempty"`
	CreatedAt      time.Time `json:"createdAt"`
	UpdatedAt      time.Time `json:"updatedAt"`
}

// ViewDevice is the API's view of a device.
func ViewDevice(d store.Device) DeviceView {
	v := DeviceView{DeviceID: d.DeviceID, State: d.State, ManufacturerID: d.ManufacturerID, HasClaimCode: len(d.ClaimCodeHash) > 0,
		CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt}
	if d.AssignedID != nil {
		v.AssignedID = *d.AssignedID
	}
	if d.OwnerID != nil {
		v.OwnerID = *d.OwnerID
	}
	if len(d.DeviceCertSHA256) > 0 {
		v.DeviceCertSHA = hexString(d.DeviceCertSHA256)
	}
	if d.NodeID != nil {
		v.NodeID = *d.NodeID
	}
	return v
}

// FilterFromQuery reads state, prefix, after and limit: a limit that is
// not a whole number from 1 to MaxListingPage is refused, not quietly
// changed (a client paging with it would misread where the listing ends).
func FilterFromQuery(args *fasthttp.Args) (store.DeviceFilter, error) {
	f := store.DeviceFilter{State: string(args.Peek("state")), IDPrefix: string(args.Peek("prefix")),
		After: string(args.Peek("after")), Limit: 100}
	if raw := args.Peek("limit"); len(raw) > 0 { // limit= is no limit, as after= is no cursor
		n, err := strconv.Atoi(string(raw))
		if err != nil || n < 1 || n > MaxListingPage {
			return f, apierr.New(http.StatusBadRequest, "bad_limit", fmt.Sprintf("limit must be a whole number from 1 to %d", MaxListingPage))
		}
		f.Limit = n
	}
	return f, nil
}

// CredentialView is a credential as a device's page and the device listing
// show it: what tells it apart and its state, never its DER or key
// material. A credential past its notAfter is "expired" whether or not the
// expiry sweep has marked it yet.
type CredentialView struct {
	CredentialID string    `json:"credentialId"`
	Type         string    `json:"type"`
	SUID         int       `json:"suid"`
	Status       string    `json:"status"`
	NotAfter     time.Time `json:"notAfter"`
	Serial       string    `json:"serial,omitempty"`
	SHA256       string    `json:"sha256,omitempty"`
	KeyID        string    `json:"keyId,omitempty"`
}

// ViewCredential is the API's view of a credential at now.
func ViewCredential(c store.CredentialSummary, now time.Time) CredentialView {
	v := CredentialView{CredentialID: c.ID, Type: c.Type, SUID: c.SUID, Status: c.Status, NotAfter: c.NotAfter}
	if c.Status == store.StatusActive && !now.Before(c.NotAfter) {
		v.Status = store.StatusExpired
	}
	if c.Serial != nil {
		v.Serial = *c.Serial
	}
	if len(c.CertSHA256) > 0 {
		v.SHA256 = hexString(c.CertSHA256)
	}
	if c.KeyID != nil {
		v.KeyID = *c.KeyID
	}
	return v
}

func summary(c store.Credential) store.CredentialSummary {
	return store.CredentialSummary{ID: c.ID, Type: c.Type, SUID: c.SUID, Status: c.Status, NotAfter: c.NotAfter,
		Serial: c.Serial, CertSHA256: c.CertSHA256, KeyID: c.KeyID}
}

// DeviceCredentialsView is a device of the listing with include=credentials.
type DeviceCredentialsView struct {
	DeviceView
	Credentials []CredentialView `json:"credentials"`
}

func (p *Portal) apiDevices(ctx *fasthttp.RequestCtx) error {
	who, err := p.authenticateFor(ctx, ScopeRead)
	if err != nil {
		return err
	}
	f, err := FilterFromQuery(ctx.QueryArgs())
	if err != nil {
		return err
	}
	switch include := string(ctx.QueryArgs().Peek("include")); include {
	case "":
	case "credentials":
		return p.apiDevicesWithCredentials(ctx, who, f)
	default:
		return apierr.New(http.StatusBadRequest, "bad_include", "include may only be credentials")
	}
	ds, err := p.Devices(ctx, who, f)
	if err != nil {
		return err
	}
	out := struct {
		Devices []DeviceView `json:"devices"`
		Next    string       `json:"next,omitempty"`
	}{Devices: []DeviceView{}}
	for _, d := range ds {
		out.Devices = append(out.Devices, ViewDevice(d))
	}
	if len(ds) == f.Limit {
		out.Next = Cursor(ds[len(ds)-1])
	}
	return httpapi.JSON(ctx, http.StatusOK, out)
}

// apiDevicesWithCredentials is the device listing with every device's
// credentials: a registry of N devices reconciled in N/limit requests.
func (p *Portal) apiDevicesWithCredentials(ctx *fasthttp.RequestCtx, who Principal, f store.DeviceFilter) error {
	page, more, err := p.DevicesWithCredentials(ctx, who, f)
	if err != nil {
		return err
	}
	now := p.now()
	out := struct {
		Devices []DeviceCredentialsView `json:"devices"`
		Next    string                  `json:"next,omitempty"`
	}{Devices: make([]DeviceCredentialsView, 0, len(page))}
	for _, d := range page {
		v := DeviceCredentialsView{DeviceView: ViewDevice(d.Device), Credentials: make([]CredentialView, 0, len(d.Credentials))}
		for _, c := range d.Credentials {
			v.Credentials = append(v.Credentials, ViewCredential(c, now))
		}
		out.Devices = append(out.Devices, v)
	}
	if more {
		out.Next = Cursor(page[len(page)-1].Device)
	}
	ctx.Response.Header.Set("Cache-Control", "no-store")
	return httpapi.JSON(ctx, http.StatusOK, out)
}

func (p *Portal) apiDevice(ctx *fasthttp.RequestCtx) error {
	who, err := p.authenticateFor(ctx, ScopeRead)
	if err != nil {
		return err
	}
	det, err := p.Detail(ctx, who, httpapi.Param(ctx, "deviceId"))
	if err != nil {
		return err
	}
	type event struct {
		At     time.Time `json:"at"`
		Actor  string    `json:"actor"`
		Action string    `json:"action"`
	}
	out := struct {
		DeviceView
		Credentials []CredentialView `json:"credentials"`
		Audit       []event          `json:"audit"`
	}{DeviceView: ViewDevice(det.Device), Credentials: []CredentialView{}, Audit: []event{}}
	now := p.now()
	for _, c := range det.Credentials {
		out.Credentials = append(out.Credentials, ViewCredential(summary(c), now))
	}
	for _, e := range det.Audit {
		out.Audit = append(out.Audit, event{e.At, e.Actor, e.Action})
	}
	return httpapi.JSON(ctx, http.StatusOK, out)
}

func (p *Portal) apiNonce(ctx *fasthttp.RequestCtx) error {
	who, err := p.authenticateFor(ctx, ScopeEnrol)
	if err != nil {
		return err
	}
	nonce, expires, err := p.Nonce(ctx, who, httpapi.Param(ctx, "deviceId"))
	if err != nil {
		return err
	}
	return httpapi.JSON(ctx, http.StatusOK, map[string]any{"nonce": nonce, "expiresAt": expires})
}

func (p *Portal) apiEnrol(ctx *fasthttp.RequestCtx) error {
	who, err := p.Authenticate(ctx, true)
	if err != nil {
		return err
	}
	if err := requireScope(who, ScopeEnrol); err != nil {
		return err
	}
	var req EnrolRequest
	if err := decodeJSON(ctx, &req); err != nil {
		return err
	}
	b, err := p.Enrol(ctx, who, httpapi.Param(ctx, "deviceId"), req)
	if err != nil {
		return err
	}
	ctx.Response.Header.Set("Cache-Control", "no-store")
	return httpapi.JSON(ctx, http.StatusCreated, b)
}

func (p *Portal) apiRelease(ctx *fasthttp.RequestCtx) error {
	who, err := p.authenticateFor(ctx, ScopeDevices)
	if err != nil {
		return err
	}
	var req ReleaseRequest
	if len(bytes.TrimSpace(ctx.PostBody())) > 0 { // the body is optional
		if err := decodeJSON(ctx, &req); err != nil {
			return err
		}
	}
	id := httpapi.Param(ctx, "deviceId")
	out, err := p.Release(ctx, who, id, req)
	if err != nil {
		return err
	}
	resp := map[string]any{"deviceId": id, "state": store.DevicePreEnrolled,
		"revoked": append([]string{}, out.Revoked...), "cancelledTokens": out.Cancelled}
	if out.ClaimCode != "" {
		resp["claimCode"] = out.ClaimCode // shown once: only its keyed hash is kept
	}
	return httpapi.JSON(ctx, http.StatusOK, resp)
}

func (p *Portal) apiRevoke(ctx *fasthttp.RequestCtx) error {
	who, err := p.authenticateFor(ctx, ScopeDevices)
	if err != nil {
		return err
	}
	var req RevokeRequest
	if err := decodeJSON(ctx, &req); err != nil {
		return err
	}
	ids, err := p.Revoke(ctx, who, httpapi.Param(ctx, "deviceId"), req)
	if err != nil {
		return err
	}
	return httpapi.JSON(ctx, http.StatusOK, map[string]any{"revoked": append([]string{}, ids...)})
}

func (p *Portal) apiHandOver(ctx *fasthttp.RequestCtx) error {
	who, err := p.authenticateFor(ctx, ScopeDevices)
	if err != nil {
		return err
	}
	var req struct {
		Subscriber string   `json:"subscriber"`
		DeviceIDs  []string `json:"deviceIds"`
	}
	if err := decodeJSON(ctx, &req); err != nil {
		return err
	}
	n, err := p.HandOver(ctx, who, req.Subscriber, req.DeviceIDs)
	if err != nil {
		return err
	}
	return httpapi.JSON(ctx, http.StatusOK, map[string]int{"handedOver": n})
}

// OBFView is an OBF as the API shows it.
type OBFView struct {
	ID            string `json:"obfId"`
	Name          string `json:"name"`
	Kind          string `json:"kind"`
	Trusted       bool   `json:"trusted"`
	StakeholderID string `json:"stakeholderId"`
	ClientCert    string `json:"clientCert,omitempty"`
}

func (p *Portal) apiRegisterOBF(ctx *fasthttp.RequestCtx) error {
	who, err := p.authenticateFor(ctx, ScopeOBFs)
	if err != nil {
		return err
	}
	var req OBFRequest
	if err := decodeJSON(ctx, &req); err != nil {
		return err
	}
	reg, err := p.RegisterOBF(ctx, who, req)
	if err != nil {
		return err
	}
	o := reg.OBF
	return httpapi.JSON(ctx, http.StatusCreated, OBFView{o.ID, o.Name, o.Kind, o.Trusted, o.StakeholderID, reg.ClientCert})
}

func (p *Portal) apiOBFs(ctx *fasthttp.RequestCtx) error {
	who, err := p.authenticateFor(ctx, ScopeRead)
	if err != nil {
		return err
	}
	os, err := p.OBFs(ctx, who)
	if err != nil {
		return err
	}
	out := struct {
		OBFs []OBFView `json:"obfs"`
	}{OBFs: []OBFView{}}
	for _, o := range os {
		out.OBFs = append(out.OBFs, OBFView{ID: o.ID, Name: o.Name, Kind: o.Kind, Trusted: o.Trusted, StakeholderID: o.StakeholderID})
	}
	return httpapi.JSON(ctx, http.StatusOK, out)
}

func (p *Portal) apiNewKey(ctx *fasthttp.RequestCtx) error {
	who, err := p.Authenticate(ctx, false)
	if err != nil {
		return err
	}
	var req struct {
		Name   string   `json:"name"`
		Scopes []string `json:"scopes"`
	}
	if err := decodeJSON(ctx, &req); err != nil {
		return err
	}
	key, k, err := p.NewAPIKey(ctx, who, req.Name, req.Scopes...)
	if err != nil {
		return err
	}
	ctx.Response.Header.Set("Cache-Control", "no-store")
	out := struct {
		APIKeyView
		Key string `json:"key"`
	}{ViewAPIKey(k), key}
	return httpapi.JSON(ctx, http.StatusCreated, out)
}

// APIKeyView is an API key as the API shows it (never the key itself).
type APIKeyView struct {
	ID          string     `json:"keyId"`
	Name        string     `json:"name"`
	Scopes      []string   `json:"scopes"`
	CreatedAt   time.Time  `json:"createdAt"`
	CreatedBy   string     `json:"createdBy"`
	ParentKeyID string     `json:"parentKeyId,omitempty"`
	LastUsedAt  *time.Time `json:"lastUsedAt,omitempty"`
	RevokedAt   *time.Time `json:"revokedAt,omitempty"`
}

// ViewAPIKey is the API's view of a key.
func ViewAPIKey(k store.APIKey) APIKeyView {
	v := APIKeyView{ID: k.ID, Name: k.Name, Scopes: append([]string{}, k.Scopes...), CreatedAt: k.CreatedAt, CreatedBy: k.CreatedBy,
		LastUsedAt: k.LastUsedAt, RevokedAt: k.RevokedAt}
	if k.ParentKeyID != nil {
		v.ParentKeyID = *k.ParentKeyID
	}
	return v
}

func (p *Portal) apiKeys(ctx *fasthttp.RequestCtx) error {
	who, err := p.Authenticate(ctx, false)
	if err != nil {
		return err
	}
	keys, err := p.APIKeys(ctx, who)
	if err != nil {
		return err
	}
	out := struct {
		Keys []APIKeyView `json:"keys"`
	}{Keys: []APIKeyView{}}
	for _, k := range keys {
		out.Keys = append(out.Keys, ViewAPIKey(k))
	}
	return httpapi.JSON(ctx, http.StatusOK, out)
}

func (p *Portal) apiRevokeKey(ctx *fasthttp.RequestCtx) error {
	who, err := p.Authenticate(ctx, false)
	if err != nil {
		return err
	}
	ids, err := p.RevokeAPIKey(ctx, who, httpapi.Param(ctx, "keyId"))
	if err != nil {
		return err
	}
	return httpapi.JSON(ctx, http.StatusOK, map[string]any{"revoked": true, "revokedKeys": ids})
}

func decodeJSON(ctx *fasthttp.RequestCtx, v any) error { return httpapi.Decode(ctx.PostBody(), v) }

func hexString(b []byte) string { return hex.EncodeToString(b) }

func (p *Portal) apiDisableOBF(ctx *fasthttp.RequestCtx) error {
	who, err := p.authenticateFor(ctx, ScopeOBFs)
	if err != nil {
		return err
	}
	if err := p.DisableOBF(ctx, who, httpapi.Param(ctx, "obfId")); err != nil {
		return err
	}
	return httpapi.JSON(ctx, http.StatusOK, map[string]bool{"disabled": true})
}
