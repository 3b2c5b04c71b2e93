package maf

import (
	"encoding/base64"
	"errors"
	"net/http"
	"time"

	"github.com/credfactory/credfactory/apierr"
	"github.com/credfactory/credfactory/httpapi"
	"github.com/credfactory/credfactory/kdf"
	"github.com/credfactory/credfactory/store"
	"github.com/valyala/fasthttp"
)

// Stakeholder is an authenticated stakeholder acting on client
// registrations: the tenant that owns adminFQDNs, and who it is for the
// audit trail.
type Stakeholder struct {
	// Tenant owns the adminFQDNs the stakeholder may register under.
	Tenant string
	// SPAdmin may de-register any device's registration.
	SPAdmin bool
	Actor   string
}

// StakeholderAuth authenticates a stakeholder's request (the portal's API
// keys and sessions) and checks it may manage MAF registrations; it
// answers with an *apierr.Error when not.
type StakeholderAuth func(ctx *fasthttp.RequestCtx) (Stakeholder, error)

// Registrations turns on client and key registration (TS-0003 §8.8).
type Registrations struct {
	// MAFFQDN is the host part of assignedSymmKeyIDs and registered key
	// IDs (TS-0003 §10.6).
	MAFFQDN      string
	Stakeholders StakeholderAuth
}

// EnableRegistration serves the registration routes. Call it while wiring.
func (a *API) EnableRegistration(r Registrations) { a.regs = &r }

// maxRegistrationBody bounds a registration request: labels and target IDs
// are small (413 beyond).
const maxRegistrationBody = 16 << 10

func (a *API) registrationRoutes() []httpapi.Route {
	return []httpapi.Route{
		{Method: fasthttp.MethodPost, Pattern: "/maf/v1/clients", Handler: a.registerClient, MaxBody: maxRegistrationBody},
		{Method: fasthttp.MethodGet, Pattern: "/maf/v1/clients", Handler: a.listClients},
		{Method: fasthttp.MethodGet, Pattern: "/maf/v1/clients/{registrationId}", Handler: a.getClient},
		{Method: fasthttp.MethodPatch, Pattern: "/maf/v1/clients/{registrationId}", Handler: a.updateClient, MaxBody: maxRegistrationBody},
		{Method: fasthttp.MethodDelete, Pattern: "/maf/v1/clients/{registrationId}", Handler: a.deregisterClient},
		{Method: fasthttp.MethodDelete, Pattern: "/maf/v1/devices/{assignedId}/registration", Handler: a.deregisterDevice},
		{Method: fasthttp.MethodPost, Pattern: "/maf/v1/keys", Handler: a.registerKey, MaxBody: maxRegistrationBody},
		{Method: fasthttp.MethodGet, Pattern: "/maf/v1/keys/{keyId}", Handler: a.retrieveKey},
		{Method: fasthttp.MethodPatch, Pattern: "/maf/v1/keys/{keyId}", Handler: a.updateKey, MaxBody: maxRegistrationBody},
		{Method: fasthttp.MethodDelete, Pattern: "/maf/v1/keys/{keyId}", Handler: a.deregisterKey},
	}
}

var errRegistrationOff = &apierr.Error{Status: http.StatusNotFound, Code: "registration_disabled",
	Message: "client and key registration are not enabled on this MAF"}

func (a *API) stakeholder(ctx *fasthttp.RequestCtx) (Stakeholder, error) {
	if a.regs == nil || a.regs.Stakeholders == nil {
		return Stakeholder{}, errRegistrationOff
	}
	return a.regs.Stakeholders(ctx)
}

type clientRequest struct {
	FQDN           string    `json:"fqdn"`
	CSEID          string    `json:"cseId"`
	AdminFQDN      string    `json:"adminFQDN"`
	Labels         []string  `json:"labels"`
	ExpirationTime time.Time `json:"expirationTime"`
}

type clientView struct {
	RegistrationID    string    `json:"registrationId"`
	ClientID          string    `json:"clientId"`
	AssignedSymmKeyID string    `json:"assignedSymmKeyID"`
	Credential        string    `json:"credential,omitempty"`
	AdminFQDN         string    `json:"adminFQDN"`
	Labels            []string  `json:"labels"`
	ExpirationTime    time.Time `json:"expirationTime"`
}

func viewClient(c store.MAFClient) clientView {
	return clientView{RegistrationID: c.ID, ClientID: c.ClientID, AssignedSymmKeyID: c.SymmKeyID, AdminFQDN: c.AdminFQDN,
		Labels: c.Labels, ExpirationTime: c.ExpiresAt}
}

func (a *API) registerClient(ctx *fasthttp.RequestCtx) error {
	who, err := a.stakeholder(ctx)
	if err != nil {
		return err
	}
	var body clientRequest
	if err := httpapi.Decode(ctx.PostBody(), &body); err != nil {
		return err
	}
	if (body.FQDN == "") == (body.CSEID == "") {
		return badRequest("bad_client_id", "give exactly one of fqdn and cseId")
	}
	id := body.FQDN
	if id == "" {
		id = body.CSEID
	} else if checkFQDN(id) != nil {
		return badRequest("bad_client_id", "fqdn must be a fully qualified domain name")
	}
	rc, err := a.reg.RegisterClient(ctx, ClientRegistration{ClientID: id, AdminFQDN: body.AdminFQDN, Labels: body.Labels,
		ExpiresAt: body.ExpirationTime, Tenant: who.Tenant, Actor: who.Actor}, a.regs.MAFFQDN)
	if err != nil {
		return mapErr(err)
	}
	v := viewClient(rc.MAFClient)
	v.Credential = base64.RawURLEncoding.EncodeToString(rc.Secret)
	ctx.Response.Header.Set("Cache-Control", "no-store")
	return httpapi.JSON(ctx, http.StatusCreated, v)
}

// tenantClient is the caller's tenant's registration, or ErrNotFound (also
// for another tenant's: existence is not disclosed).
func (a *API) tenantClient(ctx *fasthttp.RequestCtx, who Stakeholder) (store.MAFClient, error) {
	c, err := a.reg.st.MAFClientBy(ctx, "id", httpapi.Param(ctx, "registrationId"))
	if err == nil && c.Tenant != who.Tenant {
		err = store.ErrNotFound
	}
	if errors.Is(err, store.ErrNotFound) {
		return c, &apierr.Error{Status: http.StatusNotFound, Code: "registration_not_found", Message: "no such client registration"}
	}
	return c, err
}

func (a *API) listClients(ctx *fasthttp.RequestCtx) error {
	who, err := a.stakeholder(ctx)
	if err != nil {
		return err
	}
	cs, err := a.reg.st.MAFClients(ctx, who.Tenant)
	if err != nil {
		return mapErr(err)
	}
	fqdns, err := a.reg.st.AdminFQDNs(ctx, who.Tenant)
	if err != nil {
		return mapErr(err)
	}
	out := struct {
		AdminFQDNs []string     `json:"adminFQDNs"`
		Clients    []clientView `json:"clients"`
	}{AdminFQDNs: append([]string{}, fqdns...), Clients: []clientView{}}
	for _, c := range cs {
		out.Clients = append(out.Clients, viewClient(c))
	}
	return httpapi.JSON(ctx, http.StatusOK, out)
}

func (a *API) getClient(ctx *fasthttp.RequestCtx) error {
	who, err := a.stakeholder(ctx)
	if err != nil {
		return err
	}
	c, err := a.tenantClient(ctx, who)
	if err != nil {
		return mapErr(err)
	}
	return httpapi.JSON(ctx, http.StatusOK, viewClient(c))
}

type clientUpdate struct {
	Labels         *[]string  `json:"labels"`
	ExpirationTime *time.Time `json:"expirationTime"`
}

func (a *API) updateClient(ctx *fasthttp.RequestCtx) error {
	who, err := a.stakeholder(ctx)
	if err != nil {
		return err
	}
	var body clientUpdate
	if err := httpapi.Decode(ctx.PostBody(), &body); err != nil {
		return err
	}
	c, err := a.tenantClient(ctx, who)
	if err != nil {
		return mapErr(err)
	}
	var labels []string
	if body.Labels != nil {
		labels = append([]string{}, *body.Labels...)
		if err := checkLabels(labels); err != nil {
			return err
		}
	}
	if body.ExpirationTime != nil {
		if err := a.reg.checkExpiry(*body.ExpirationTime, a.reg.now().Add(MaxClientLifetime)); err != nil {
			return err
		}
	}
	if err := a.reg.st.UpdateMAFClient(ctx, who.Tenant, c.ID, labels, body.ExpirationTime, who.Actor, a.reg.now()); err != nil {
		return mapErr(err)
	}
	c, err = a.tenantClient(ctx, who)
	if err != nil {
		return mapErr(err)
	}
	return httpapi.JSON(ctx, http.StatusOK, viewClient(c))
}

func (a *API) deregisterClient(ctx *fasthttp.RequestCtx) error {
	who, err := a.stakeholder(ctx)
	if err != nil {
		return err
	}
	keys, err := a.reg.st.DeleteMAFClient(ctx, who.Tenant, httpapi.Param(ctx, "registrationId"), who.Actor, a.reg.now())
	if errors.Is(err, store.ErrNotFound) {
		return &apierr.Error{Status: http.StatusNotFound, Code: "registration_not_found", Message: "no such client registration"}
	}
	if err != nil {
		return mapErr(err)
	}
	return httpapi.JSON(ctx, http.StatusOK, struct {
		DeletedKeys []string `json:"deletedKeys"`
	}{append([]string{}, keys...)})
}

// deregisterDevice ends a device's registration with the MEF/MAF: every
// active credential of its assigned ID is revoked (TS-0003 §8.3.4.2), within
// the caller's tenant unless the caller is the SP's administrator.
func (a *API) deregisterDevice(ctx *fasthttp.RequestCtx) error {
	who, err := a.stakeholder(ctx)
	if err != nil {
		return err
	}
	assigned := httpapi.Param(ctx, "assignedId")
	scope := who.Tenant
	if who.SPAdmin {
		scope = ""
	}
	revoked, err := a.reg.Deregister(ctx, assigned, who.Actor, scope)
	if err != nil {
		return mapErr(err)
	}
	if len(revoked) == 0 {
		creds, err := a.reg.List(ctx, assigned)
		if err != nil {
			return mapErr(err)
		}
		known := false
		for _, c := range creds {
			known = known || scope == "" || c.Tenant == scope
		}
		if !known {
			return &apierr.Error{Status: http.StatusNotFound, Code: "assigned_id_not_found", Message: "no credentials for that assigned ID"}
		}
	}
	return revokedJSON(ctx, revoked)
}

type keyRequest struct {
	AdminFQDN      string    `json:"adminFQDN"`
	SUID           int       `json:"suid"`
	TargetIDs      []string  `json:"targetIDs"`
	Labels         []string  `json:"labels"`
	ExpirationTime time.Time `json:"expirationTime"`
	Key            *string   `json:"key"`
}

type keyView struct {
	KeyID          string    `json:"keyId"`
	RelativeKeyID  string    `json:"relativeKeyId,omitempty"`
	Key            string    `json:"key,omitempty"`
	SUID           int       `json:"suid"`
	AdminFQDN      string    `json:"adminFQDN"`
	TargetIDs      []string  `json:"targetIDs"`
	Labels         []string  `json:"labels"`
	ExpirationTime time.Time `json:"expirationTime"`
}

func viewKey(k store.MAFKey) keyView {
	return keyView{KeyID: k.ID, SUID: k.SUID, AdminFQDN: k.AdminFQDN, TargetIDs: k.TargetIDs, Labels: k.Labels, ExpirationTime: k.ExpiresAt}
}

var errNotAClient = &apierr.Error{Status: http.StatusForbidden, Code: "not_a_registered_client",
	Message: "keys are registered by a registered MAF client (its assignedSymmKeyID credential)"}

// registeredClient authenticates a registered client (symmetric key).
func (a *API) registeredClient(ctx *fasthttp.RequestCtx) (caller, error) {
	if a.regs == nil {
		return caller{}, errRegistrationOff
	}
	c, err := a.authenticate(ctx)
	if err != nil {
		return c, err
	}
	if c.client == nil {
		return c, errNotAClient
	}
	return c, nil
}

func (a *API) registerKey(ctx *fasthttp.RequestCtx) error {
	c, err := a.registeredClient(ctx)
	if err != nil {
		return err
	}
	var body keyRequest
	if err := httpapi.Decode(ctx.PostBody(), &body); err != nil {
		return err
	}
	req := KeyRegistration{AdminFQDN: body.AdminFQDN, SUID: kdf.SUID(body.SUID), TargetIDs: body.TargetIDs, Labels: body.Labels,
		ExpiresAt: body.ExpirationTime}
	if body.Key != nil {
		if req.Value, err = DecodeKey(*body.Key); err != nil {
			return badRequest("bad_key", "key must be base64")
		}
	}
	k, err := a.reg.RegisterKey(ctx, *c.client, req, a.regs.MAFFQDN, "maf-client:"+c.client.ClientID)
	if err != nil {
		return mapErr(err)
	}
	v := viewKey(k.MAFKey)
	v.RelativeKeyID = k.RelativeKeyID
	if k.Value != nil {
		v.Key = base64.StdEncoding.EncodeToString(k.Value)
	}
	ctx.Response.Header.Set("Cache-Control", "no-store")
	return httpapi.JSON(ctx, http.StatusCreated, v)
}

var errKeyNotFound = &apierr.Error{Status: http.StatusNotFound, Code: "key_not_found", Message: "no such registered key"}

// registeredKey loads a key; a key the caller may not even see is
// errKeyNotFound (existence is not disclosed).
func (a *API) registeredKey(ctx *fasthttp.RequestCtx, c caller) (store.MAFKey, bool, error) {
	k, err := a.reg.st.MAFKeyByID(ctx, normalKeyID(httpapi.Param(ctx, "keyId")))
	if errors.Is(err, store.ErrNotFound) {
		return k, false, errKeyNotFound
	}
	if err != nil {
		return k, false, mapErr(err)
	}
	owner := c.client != nil && c.client.ID == k.RegistrationID
	return k, owner, nil
}

// retrieveKey is key retrieval (TS-0003 §8.8): the registering client or
// a Target the key lists, of the key's tenant (or the SP's).
func (a *API) retrieveKey(ctx *fasthttp.RequestCtx) error {
	if a.regs == nil {
		return errRegistrationOff
	}
	c, err := a.authenticate(ctx)
	if err != nil {
		return err
	}
	k, owner, err := a.registeredKey(ctx, c)
	if err != nil {
		return err
	}
	target := c.reaches(k.Tenant) && containsAny(k.TargetIDs, c.names)
	if !owner && !target {
		return mapErr(ErrNotAuthorised)
	}
	if !a.reg.now().Before(k.ExpiresAt) {
		return &apierr.Error{Status: http.StatusGone, Code: "key_expired", Message: "the registered key has expired"}
	}
	value, err := a.reg.OpenKey(ctx, k)
	if err != nil {
		return err
	}
	v := viewKey(k)
	v.Key = base64.StdEncoding.EncodeToString(value)
	ctx.Response.Header.Set("Cache-Control", "no-store")
	return httpapi.JSON(ctx, http.StatusOK, v)
}

type keyUpdate struct {
	Labels         *[]string  `json:"labels"`
	TargetIDs      *[]string  `json:"targetIDs"`
	ExpirationTime *time.Time `json:"expirationTime"`
}

func (a *API) ownKey(ctx *fasthttp.RequestCtx) (caller, store.MAFKey, error) {
	c, err := a.registeredClient(ctx)
	if err != nil {
		return c, store.MAFKey{}, err
	}
	k, owner, err := a.registeredKey(ctx, c)
	if err != nil {
		return c, k, err
	}
	if !owner {
		if c.reaches(k.Tenant) && containsAny(k.TargetIDs, c.names) {
			return c, k, &apierr.Error{Status: http.StatusForbidden, Code: "not_authorised", Message: "only the client that registered a key may change it"}
		}
		return c, k, errKeyNotFound
	}
	return c, k, nil
}

func (a *API) updateKey(ctx *fasthttp.RequestCtx) error {
	c, k, err := a.ownKey(ctx)
	if err != nil {
		return err
	}
	var body keyUpdate
	if err := httpapi.Decode(ctx.PostBody(), &body); err != nil {
		return err
	}
	var u store.MAFKeyUpdate
	if body.Labels != nil {
		u.Labels = append([]string{}, *body.Labels...)
		if err := checkLabels(u.Labels); err != nil {
			return err
		}
	}
	if body.TargetIDs != nil {
		u.TargetIDs = *body.TargetIDs
		if err := a.reg.checkTargets(u.TargetIDs); err != nil {
			return err
		}
	}
	if body.ExpirationTime != nil {
		if err := a.reg.checkExpiry(*body.ExpirationTime, c.client.ExpiresAt); err != nil {
			return err
		}
		u.ExpiresAt = body.ExpirationTime
	}
	if err := a.reg.st.UpdateMAFKey(ctx, c.client.ID, c.client.Tenant, k.ID, u, "maf-client:"+c.client.ClientID, a.reg.now()); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return errKeyNotFound
		}
		return mapErr(err)
	}
	k, err = a.reg.st.MAFKeyByID(ctx, k.ID)
	if err != nil {
		return mapErr(err)
	}
	return httpapi.JSON(ctx, http.StatusOK, viewKey(k))
}

func (a *API) deregisterKey(ctx *fasthttp.RequestCtx) error {
	c, k, err := a.ownKey(ctx)
	if err != nil {
		return err
	}
	if err := a.reg.st.DeleteMAFKey(ctx, c.client.ID, c.client.Tenant, k.ID, "maf-client:"+c.client.ClientID, a.reg.now()); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return errKeyNotFound
		}
		return mapErr(err)
	}
	return httpapi.JSON(ctx, http.StatusOK, struct {
		Deleted string `json:"deleted"`
	}{k.ID})
}
