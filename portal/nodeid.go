package portal

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/credfactory/credfactory/apierr"
	"github.com/credfactory/credfactory/httpapi"
	"github.com/credfactory/credfactory/nodeid"
	"github.com/credfactory/credfactory/store"
	"github.com/valyala/fasthttp"
)

// maxNodeIDBody bounds POST .../node-id: one Node-ID of at most
// nodeid.MaxLen bytes, JSON-escaped, with room to spare.
const maxNodeIDBody = 4 << 10

var (
	errNodeIDTaken = apierr.New(http.StatusConflict, "node_id_taken",
		"that Node-ID is bound to another device of this SP: a Node-ID names one node (TS-0001 §7.1.5)")
	errNodeIDInUse = apierr.New(http.StatusConflict, "node_id_in_use",
		"the device's Node-ID is named by an active Node-ID certificate or may be by an open enrolment token: revoke the certificate, or release the device, or wait until the token has expired and the expiry sweep has marked it, first")
)

// SetNodeID binds a Node-ID to one of the caller's devices, changes it, or
// with "" clears it (docs/onem2m.md "Certificate names"): the M2M-Node-ID
// (TS-0001 §7.1.5) a Node-ID certificate (TS-0003 §10.1.1.8) will name.
// Whoever works on the device sets it (its subscriber, installer or,
// before the hand-over, manufacturer; an sp-admin), not a forwarding OBF.
// The value is a URN (RFC 8141) or an OID, stored canonical (package
// nodeid); one Node-ID names one device across every tenant of the SP,
// and a clash says so without naming the other device.
func (p *Portal) SetNodeID(ctx context.Context, who Principal, ref, value string) (store.Device, error) {
	d, err := p.Device(ctx, who, ref)
	if err != nil {
		return store.Device{}, err
	}
	if who.Via == "obf" {
		return store.Device{}, errForbidden
	}
	canonical := ""
	if value != "" {
		if canonical, err = nodeid.Parse(value); err != nil {
			return store.Device{}, apierr.New(http.StatusBadRequest, "bad_node_id", err.Error())
		}
	}
	// The tenant is checked again inside the transaction: the device may
	// have been released and claimed by another tenant since Device read
	// it.
	out, err := p.st.SetNodeID(ctx, store.NodeIDChange{DeviceID: d.ID, Tenant: who.Tenant(), NodeID: canonical, Actor: who.actor(), Now: p.now()})
	switch {
	case errors.Is(err, store.ErrNotFound):
		return store.Device{}, errDeviceNotFound
	case errors.Is(err, store.ErrNodeIDTaken):
		return store.Device{}, errNodeIDTaken
	case errors.Is(err, store.ErrNodeIDInUse):
		e := *errNodeIDInUse
		e.Err = err
		return store.Device{}, &e
	}
	return out, storeErr(err)
}

// pageNodeID is SetNodeID from the device page's form.
func (p *Portal) pageNodeID(ctx *fasthttp.RequestCtx) error {
	who, err := p.pageAuth(ctx)
	if err != nil {
		return err
	}
	id := httpapi.Param(ctx, "deviceId")
	if _, err := p.SetNodeID(ctx, who, id, strings.TrimSpace(string(ctx.PostArgs().Peek("nodeId")))); err != nil {
		return p.deviceError(ctx, who, id, "", "The Node-ID was not changed: ", err)
	}
	redirect(ctx, "/devices/"+url.PathEscape(id))
	return nil
}

func (p *Portal) apiNodeID(ctx *fasthttp.RequestCtx) error {
	who, err := p.authenticateFor(ctx, ScopeDevices)
	if err != nil {
		return err
	}
	var req struct {
		NodeID *string `json:"nodeId"`
	}
	if err := decodeJSON(ctx, &req); err != nil {
		return err
	}
	if req.NodeID == nil {
		return apierr.New(http.StatusBadRequest, "bad_request", `give {"nodeId": "<URN or OID>"}, or "" to clear it`)
	}
	d, err := p.SetNodeID(ctx, who, httpapi.Param(ctx, "deviceId"), *req.NodeID)
	if err != nil {
		return err
	}
	return httpapi.JSON(ctx, http.StatusOK, ViewDevice(d))
}
