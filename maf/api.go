package maf

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/credfactory/credfactory/apierr"
	"github.com/credfactory/credfactory/clientauth"
	"github.com/credfactory/credfactory/httpapi"
	"github.com/credfactory/credfactory/kdf"
	"github.com/credfactory/credfactory/store"
	"github.com/valyala/fasthttp"
)

// API is the MAF's HTTP interface for MAF clients (CSEs, Enrolment Targets,
// devices), each authenticated by a TLS client certificate or by a
// symmetric key (a registered client's assignedSymmKeyID, a device's Km:
// docs/maf.md), and for the stakeholders who register clients.
type API struct {
	reg    *Registry
	verify *clientauth.Verifier
	// admins are client names (URI or DNS SAN) that may read and revoke
	// any credential: the SP's own back-office services.
	admins []string
	// regs is nil until EnableRegistration: the registration routes then
	// answer 404.
	regs *Registrations
	// ownerNamed are CAs whose certificates carry a name the device's owner
	// chose rather than one the SP assigned (the node CA: a Node-ID is
	// bound through the portal, docs/onem2m.md "Certificate names").
	ownerNamed []*x509.Certificate
}

// OwnerNamedCAs names the CAs whose certificates' names a tenant chose: a
// caller with one is known by its assigned ID only, and only while the
// registry holds its certificate active, like a certificate a trusted OBS
// issued. Otherwise a tenant could bind another tenant's Target name as a
// Node-ID and fetch that Target's keys.
func (a *API) OwnerNamedCAs(cas ...*x509.Certificate) *API {
	a.ownerNamed = append(a.ownerNamed, cas...)
	return a
}

// ownerNamedLeaf reports whether leaf, whose chain Verify has checked, was
// issued by one of the ownerNamed CAs.
func (a *API) ownerNamedLeaf(leaf *x509.Certificate) bool {
	return slices.ContainsFunc(a.ownerNamed, func(ca *x509.Certificate) bool {
		return bytes.Equal(leaf.RawIssuer, ca.RawSubject) &&
			(len(leaf.AuthorityKeyId) == 0 || bytes.Equal(leaf.AuthorityKeyId, ca.SubjectKeyId))
	})
}

// NewAPI serves reg to clients that verify.
func NewAPI(reg *Registry, verify *clientauth.Verifier, admins []string) *API {
	return &API{reg: reg, verify: verify, admins: admins}
}

// Routes lists the MAF API (api/openapi.yaml; TS-0003 §8.8).
func (a *API) Routes() []httpapi.Route {
	return append([]httpapi.Route{
		{Method: fasthttp.MethodGet, Pattern: "/maf/v1/fetchCredentials/{keId}/{suid}", Handler: a.fetch},
		// TS-0003 §8.3.5 has Targets fetch from the MEF; the MEF and the
		// MAF share one registry here, so both paths answer alike.
		{Method: fasthttp.MethodGet, Pattern: "/mef/v1/fetchCredentials/{keId}/{suid}", Handler: a.fetch},
		{Method: fasthttp.MethodGet, Pattern: "/maf/v1/credentials/{credentialId}", Handler: a.status},
		{Method: fasthttp.MethodGet, Pattern: "/maf/v1/credentials", Handler: a.list},
		{Method: fasthttp.MethodPost, Pattern: "/maf/v1/credentials/{credentialId}/revoke", Handler: a.revoke},
		{Method: fasthttp.MethodPost, Pattern: "/maf/v1/devices/{assignedId}/revoke", Handler: a.revokeDevice},
	}, a.registrationRoutes()...)
}

// caller is an authenticated MAF client: its certificate names and, when the
// certificate is one this registry holds, the assigned ID it was issued to.
type caller struct {
	names      []string
	assignedID string
	admin      bool
	// client is set for a registered client (symmetric-key
	// authentication): its names are its tenant's choice, so it reaches
	// only its tenant's credentials, or any if its tenant is the SP's
	// (spAdmin).
	client  *store.MAFClient
	tenant  string
	spAdmin bool
}

// errClientCertExpired tells a client its certificate lapsed, unlike a
// revoked one: it renews before expiry next time, or enrols again.
var errClientCertExpired = &apierr.Error{Status: http.StatusUnauthorized, Code: "client_certificate_expired",
	Message: "the TLS client certificate has expired: renew it (EST simplereenroll) before it lapses, or enrol again"}

func (a *API) authenticate(ctx *fasthttp.RequestCtx) (caller, error) {
	if auth := ctx.Request.Header.Peek("Authorization"); len(auth) > 0 {
		// Go's crypto/tls has no TLS-PSK (TS-0003 §10.2): a symmetric
		// credential is presented inside the server-authenticated TLS
		// session instead (docs/maf.md "Authenticating to the MAF").
		v, ok := strings.CutPrefix(string(auth), "Bearer ")
		i := strings.LastIndexByte(v, ':')
		if !ok || i <= 0 {
			return caller{}, errBadKeyCredential
		}
		key, err := DecodeKey(v[i+1:])
		if err != nil || len(key) < minKeyLen {
			return caller{}, errBadKeyCredential
		}
		c, err := a.reg.authenticateKey(ctx, v[:i], key)
		if err != nil {
			return caller{}, mapErr(err)
		}
		return c, nil
	}
	state := ctx.TLSConnectionState()
	peer, err := a.verify.Verify(state)
	switch {
	case errors.Is(err, clientauth.ErrNoCertificate):
		return caller{}, &apierr.Error{Status: http.StatusUnauthorized, Code: "client_certificate_required",
			Message: "the MAF API requires a TLS client certificate issued by this SP, or a registered client's or a device's key (Authorization: Bearer <key ID>:<base64 key>)"}
	case err != nil:
		// A device certificate a trusted OBS issued does not chain through
		// the SP's issuing CA; it is accepted when the registry holds it,
		// active and in date (the MEF checked its chain and names when it
		// was forwarded), and then it is known by its assigned ID only,
		// never by names its issuer chose.
		leaf := state.PeerCertificates[0]
		fp := sha256.Sum256(leaf.Raw)
		own, lerr := a.reg.Get(ctx, store.ByCertSHA256, fp[:])
		now := time.Now()
		if lerr == nil && own.Status == store.StatusActive && now.After(leaf.NotBefore) && now.Before(leaf.NotAfter) {
			return caller{names: []string{own.AssignedID}, assignedID: own.AssignedID}, nil
		}
		if lerr != nil && !errors.Is(lerr, store.ErrNotFound) {
			return caller{}, mapErr(lerr)
		}
		if !now.Before(leaf.NotAfter) {
			return caller{}, errClientCertExpired
		}
		return caller{}, &apierr.Error{Status: http.StatusUnauthorized, Code: "client_certificate_invalid",
			Message: "the TLS client certificate does not chain to this SP's CA for client authentication", Err: err}
	}
	c := caller{names: peer.Names}
	ownerNamed := a.ownerNamedLeaf(peer.Certificate)
	if ownerNamed {
		c.names = nil
	}
	own, err := a.reg.Get(ctx, store.ByCertSHA256, peer.SHA256[:])
	switch {
	case ownerNamed && errors.Is(err, store.ErrNotFound):
		return caller{}, &apierr.Error{Status: http.StatusUnauthorized, Code: "client_certificate_invalid",
			Message: "the TLS client certificate is not one the registry holds"}
	case err == nil && own.Status == store.StatusExpired:
		// The sweep marked it (the clocks of the sweeping replica and this
		// one may differ by a little).
		return caller{}, errClientCertExpired
	case err == nil && own.Status != store.StatusActive:
		return caller{}, &apierr.Error{Status: http.StatusUnauthorized, Code: "client_certificate_revoked",
			Message: "the TLS client certificate is " + own.Status}
	case err == nil:
		c.assignedID = own.AssignedID
		c.names = append(c.names, own.AssignedID)
	case !errors.Is(err, store.ErrNotFound):
		return caller{}, mapErr(err)
	}
	c.admin = slices.ContainsFunc(c.names, func(n string) bool { return slices.Contains(a.admins, n) })
	return c, nil
}

// may reports whether the caller may read (or, for the holder and admins,
// revoke) credential c.
func (c caller) may(cred store.Credential, revoke bool) bool {
	if c.admin || c.assignedID != "" && c.assignedID == cred.AssignedID {
		return true
	}
	if !c.reaches(cred.Tenant) {
		return false
	}
	return !revoke && slices.ContainsFunc(cred.TargetIDs, func(t string) bool { return slices.Contains(c.names, t) })
}

// reaches reports whether the caller may act on a tenant's credentials at
// all: a registered client only on its own tenant's, unless the SP
// registered it; a certificate's names are the SP's own, so unbounded.
func (c caller) reaches(tenant string) bool {
	return c.client == nil || c.spAdmin || c.tenant == tenant
}

type fetchResponse struct {
	Status       string    `json:"status"`
	Credential   string    `json:"credential"`
	CredentialID string    `json:"credentialId"`
	EnroleeID    string    `json:"enroleeId"`
	Lifetime     time.Time `json:"lifetime"`
	SUID         int       `json:"suid"`
}

func (a *API) fetch(ctx *fasthttp.RequestCtx) error {
	c, err := a.authenticate(ctx)
	if err != nil {
		return err
	}
	keID, _ := ctx.UserValue("keId").(string)
	suid, err := kdf.ParseSUID(httpapi.Param(ctx, "suid"))
	if err != nil {
		return &apierr.Error{Status: http.StatusBadRequest, Code: "bad_suid", Message: "SUID must be a oneM2M usage code (TS-0004 m2m:suid)", Err: err}
	}
	if _, _, err := kdf.ParseKeID(keID); err != nil {
		return &apierr.Error{Status: http.StatusBadRequest, Code: "bad_key_id", Message: "KeID must be <hex>@<MEF FQDN> (TS-0003 §10.3.4)", Err: err}
	}
	if c.client != nil && !c.spAdmin {
		// Before Fetch, so that a registered client learns nothing (not
		// even revoked or expired) of another tenant's keys.
		creds, err := a.reg.st.CredentialForTarget(ctx, keID, int(suid))
		if err != nil {
			return mapErr(err)
		}
		if len(creds) > 0 && !slices.ContainsFunc(creds, func(cr store.Credential) bool {
			return cr.Tenant == c.tenant && containsAny(cr.TargetIDs, c.names)
		}) {
			return mapErr(ErrNotAuthorised)
		}
	}
	got, err := a.reg.Fetch(ctx, keID, suid, c.names)
	if err != nil {
		return mapErr(err)
	}
	if !c.reaches(got.Credential.Tenant) {
		// Another tenant's device listed this client's name: the name is
		// the registering tenant's choice, not proof it is that Target.
		return mapErr(ErrNotAuthorised)
	}
	ctx.Response.Header.Set("Cache-Control", "no-store")
	return httpapi.JSON(ctx, http.StatusOK, fetchResponse{
		Status: "success", Credential: base64.StdEncoding.EncodeToString(got.Key), CredentialID: got.Credential.ID,
		EnroleeID: got.Credential.AssignedID, Lifetime: got.Credential.NotAfter, SUID: got.Credential.SUID,
	})
}

// credentialView is a credential's public face: never the key, the sealed
// key or the derivation context.
type credentialView struct {
	CredentialID     string     `json:"credentialId"`
	AssignedID       string     `json:"assignedId"`
	Type             string     `json:"type"`
	SUID             int        `json:"suid"`
	Status           string     `json:"status"`
	NotBefore        time.Time  `json:"notBefore"`
	NotAfter         time.Time  `json:"notAfter"`
	RevokedAt        *time.Time `json:"revokedAt,omitempty"`
	RevocationReason *int       `json:"revocationReason,omitempty"`
	Serial           string     `json:"serial,omitempty"`
	SHA256           string     `json:"sha256,omitempty"`
	KeyID            string     `json:"keyId,omitempty"`
	Source           string     `json:"source"`
	TargetIDs        []string   `json:"targetIds"`
}

func view(c store.Credential) credentialView {
	v := credentialView{CredentialID: c.ID, AssignedID: c.AssignedID, Type: c.Type, SUID: c.SUID, Status: c.Status,
		NotBefore: c.NotBefore, NotAfter: c.NotAfter, RevokedAt: c.RevokedAt, RevocationReason: c.RevocationReason,
		Source: c.Source, TargetIDs: c.TargetIDs}
	if c.Status == store.StatusActive && !time.Now().Before(c.NotAfter) {
		v.Status = store.StatusExpired
	}
	if c.Serial != nil {
		v.Serial = *c.Serial
	}
	if len(c.CertSHA256) > 0 {
		v.SHA256 = hex.EncodeToString(c.CertSHA256)
	}
	if c.KeyID != nil {
		v.KeyID = *c.KeyID
	}
	return v
}

func (a *API) status(ctx *fasthttp.RequestCtx) error {
	c, err := a.authenticate(ctx)
	if err != nil {
		return err
	}
	cred, err := a.reg.Get(ctx, store.ByID, httpapi.Param(ctx, "credentialId"))
	if err != nil {
		return mapErr(err)
	}
	if !c.may(cred, false) {
		// The same answer as an unknown ID: existence is not disclosed.
		return mapErr(store.ErrNotFound)
	}
	return httpapi.JSON(ctx, http.StatusOK, view(cred))
}

func (a *API) list(ctx *fasthttp.RequestCtx) error {
	c, err := a.authenticate(ctx)
	if err != nil {
		return err
	}
	args := ctx.QueryArgs()
	var creds []store.Credential
	switch {
	case args.Has("assignedId"):
		creds, err = a.reg.List(ctx, string(args.Peek("assignedId")))
	case args.Has("serial"):
		creds, err = one(a.reg.Get(ctx, store.BySerial, string(args.Peek("serial"))))
	case args.Has("sha256"):
		fp, herr := hex.DecodeString(string(args.Peek("sha256")))
		if herr != nil || len(fp) != 32 {
			return &apierr.Error{Status: http.StatusBadRequest, Code: "bad_fingerprint", Message: "sha256 must be 64 hex digits"}
		}
		creds, err = one(a.reg.Get(ctx, store.ByCertSHA256, fp))
	default:
		return &apierr.Error{Status: http.StatusBadRequest, Code: "missing_filter", Message: "give assignedId, serial or sha256"}
	}
	if err != nil {
		return mapErr(err)
	}
	out := struct {
		Credentials []credentialView `json:"credentials"`
	}{Credentials: []credentialView{}}
	for _, cred := range creds {
		if c.may(cred, false) {
			out.Credentials = append(out.Credentials, view(cred))
		}
	}
	return httpapi.JSON(ctx, http.StatusOK, out)
}

func one(c store.Credential, err error) ([]store.Credential, error) {
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return []store.Credential{c}, nil
}

// revokeBody is a revocation request: an RFC 5280 reason name and, for a
// device (assigned ID) revocation, the usages to limit it to.
type revokeBody struct {
	Reason string `json:"reason"`
	SUIDs  []int  `json:"suids"`
}

func decodeRevoke(ctx *fasthttp.RequestCtx) (revokeBody, int, error) {
	var body revokeBody
	if len(ctx.PostBody()) > 0 {
		if err := httpapi.Decode(ctx.PostBody(), &body); err != nil {
			return body, 0, err
		}
	}
	reason, err := ParseReason(body.Reason)
	if err != nil {
		return body, 0, err
	}
	for _, s := range body.SUIDs {
		if !kdf.SUID(s).Valid() {
			return body, 0, &apierr.Error{Status: http.StatusBadRequest, Code: "bad_suid", Message: "suids must be oneM2M usage codes (TS-0004 m2m:suid)"}
		}
	}
	return body, reason, nil
}

func (a *API) revoke(ctx *fasthttp.RequestCtx) error {
	c, err := a.authenticate(ctx)
	if err != nil {
		return err
	}
	body, reason, err := decodeRevoke(ctx)
	if err != nil {
		return err
	}
	if len(body.SUIDs) > 0 {
		return &apierr.Error{Status: http.StatusBadRequest, Code: "bad_request", Message: "suids narrow a device revocation (/maf/v1/devices/{assignedId}/revoke), not one credential"}
	}
	id := httpapi.Param(ctx, "credentialId")
	cred, err := a.reg.Get(ctx, store.ByID, id)
	if err != nil {
		return mapErr(err)
	}
	if !c.may(cred, true) {
		if c.may(cred, false) {
			return &apierr.Error{Status: http.StatusForbidden, Code: "not_authorised", Message: "only the credential's holder or an SP administrator may revoke it"}
		}
		return mapErr(store.ErrNotFound)
	}
	actor := "maf-client:" + firstOr(c.names, "unknown")
	revoked, err := a.reg.Revoke(ctx, store.Revocation{ID: id, Reason: reason, Actor: actor, Tenant: cred.Tenant})
	if err != nil {
		return mapErr(err)
	}
	return revokedJSON(ctx, revoked)
}

// revokeDevice revokes every active credential of an assigned ID, or those
// of the given usages: an SP administrator's tool (a lost or compromised
// device), not something a device does to itself.
func (a *API) revokeDevice(ctx *fasthttp.RequestCtx) error {
	c, err := a.authenticate(ctx)
	if err != nil {
		return err
	}
	if !c.admin {
		return &apierr.Error{Status: http.StatusForbidden, Code: "not_authorised", Message: "only an SP administrator may revoke a device's credentials"}
	}
	body, reason, err := decodeRevoke(ctx)
	if err != nil {
		return err
	}
	assigned := httpapi.Param(ctx, "assignedId")
	actor := "maf-client:" + firstOr(c.names, "unknown")
	// Each audit event goes to its credential's own tenant (Tenant empty).
	revoked, err := a.reg.Revoke(ctx, store.Revocation{AssignedID: assigned, SUIDs: body.SUIDs, Reason: reason, Actor: actor})
	if err != nil {
		return mapErr(err)
	}
	if len(revoked) == 0 {
		// Nothing was active: an unknown assigned ID is a 404, a known one
		// whose credentials were all revoked already is an empty answer.
		// Only then is the listing worth reading.
		creds, err := a.reg.List(ctx, assigned)
		if err != nil {
			return mapErr(err)
		}
		if len(creds) == 0 {
			return &apierr.Error{Status: http.StatusNotFound, Code: "assigned_id_not_found", Message: "no credentials for that assigned ID"}
		}
	}
	return revokedJSON(ctx, revoked)
}

func revokedJSON(ctx *fasthttp.RequestCtx, revoked []string) error {
	return httpapi.JSON(ctx, http.StatusOK, struct {
		Revoked []string `json:"revoked"`
	}{Revoked: append([]string{}, revoked...)})
}

// mapErr turns registry and store verdicts into API errors. Outages (store
// and HSM) carry their own 503 answer through apierr.Unavailable.
func mapErr(err error) error {
	switch {
	case errors.Is(err, ErrUnknownKey), errors.Is(err, store.ErrNotFound):
		return &apierr.Error{Status: http.StatusNotFound, Code: "credential_not_found", Message: "no such credential", Err: err}
	case errors.Is(err, ErrAmbiguousKey):
		return &apierr.Error{Status: http.StatusConflict, Code: "key_id_ambiguous", Message: "that KeID names keys of more than one device; none is answered", Err: err}
	case errors.Is(err, ErrNotAuthorised):
		return &apierr.Error{Status: http.StatusForbidden, Code: "target_not_authorised", Message: "this client is not a target of that credential", Err: err}
	case errors.Is(err, ErrRevoked):
		return &apierr.Error{Status: http.StatusGone, Code: "credential_revoked", Message: "the credential was revoked", Err: err}
	case errors.Is(err, ErrExpired):
		return &apierr.Error{Status: http.StatusGone, Code: "credential_expired", Message: "the credential has expired", Err: err}
	case errors.Is(err, store.ErrNotOwned):
		return &apierr.Error{Status: http.StatusForbidden, Code: "admin_fqdn_not_owned",
			Message: "that adminFQDN is not one your tenant owns: the SP operator assigns adminFQDNs (credfactory admin add-admin-fqdn)", Err: err}
	case errors.Is(err, store.ErrConflict):
		return &apierr.Error{Status: http.StatusConflict, Code: "already_registered", Message: "that client ID is registered already", Err: err}
	case errors.Is(err, store.ErrInvalid):
		return &apierr.Error{Status: http.StatusBadRequest, Code: "bad_request", Message: "the request is invalid", Err: err}
	case errors.Is(err, store.ErrContention):
		return &apierr.Error{Status: http.StatusConflict, Code: "registry_contention", Message: "the request kept conflicting with concurrent changes; retry it", RetryAfter: 1, Err: err}
	}
	return err
}

func firstOr(s []string, def string) string {
	if len(s) > 0 {
		return s[0]
	}
	return def
}

// normalKeyID normalises a key ID: KmIDs are case-insensitive (TS-0003 §10.6).
func normalKeyID(id string) string { return strings.ToLower(id) }

func containsAny(list, names []string) bool {
	return slices.ContainsFunc(list, func(t string) bool { return slices.Contains(names, t) })
}
