package portal

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/credfactory/credfactory/apierr"
	"github.com/credfactory/credfactory/ca"
	"github.com/credfactory/credfactory/crlreason"
	"github.com/credfactory/credfactory/store"
	"github.com/google/uuid"
)

// OBFRequest registers an on-boarding function (sp-admin).
type OBFRequest struct {
	Name    string `json:"name"`
	Kind    string `json:"kind"` // obd or obs
	Trusted bool   `json:"trusted"`
	// Owner is the name of the stakeholder the OBF works for.
	Owner string `json:"owner"`
	// ClientCSR (PEM) certifies the key a trusted OBF forwards with; the key
	// stays in the OBF's own HSM.
	ClientCSR string `json:"clientCsr,omitempty"`
	// SubCACSR and the permitted domains were the retired sub-CA mode: a
	// registration that sets them is refused (sub_ca_retired). Name
	// constraints cannot keep one tenant's OBS from naming another
	// tenant's devices, whose URIs share the SP's host (README "Trust
	// model").
	SubCACSR            string   `json:"subCaCsr,omitempty"`
	PermittedDNSDomains []string `json:"permittedDnsDomains,omitempty"`
	PermittedURIDomains []string `json:"permittedUriDomains,omitempty"`
}

// RegisteredOBF answers a registration: the client certificate, PEM with
// its chain.
type RegisteredOBF struct {
	OBF        store.OBF `json:"-"`
	ClientCert string    `json:"clientCert,omitempty"`
}

var errSubCARetired = apierr.New(http.StatusBadRequest, "sub_ca_retired",
	"OBSes no longer get a sub-CA: a trusted OBS forwards its devices' CSRs and the SP's CA certifies them (README \"Trust model\"); register it with clientCsr only")

// RegisterOBF records an OBF and, for a trusted one, has the OBF CA issue
// its mTLS client certificate, which names the OBF CA's CRL and OCSP
// responder and is revoked when the OBF is disabled.
func (p *Portal) RegisterOBF(ctx context.Context, who Principal, req OBFRequest) (RegisteredOBF, error) {
	if err := requireRole(who, store.RoleSPAdmin); err != nil {
		return RegisteredOBF{}, err
	}
	req.Name = strings.TrimSpace(req.Name)
	if req.Name == "" || len(req.Name) > 100 {
		return RegisteredOBF{}, apierr.New(http.StatusBadRequest, "bad_name", "an OBF needs a name of 1 to 100 characters")
	}
	if req.Kind != store.OBD && req.Kind != store.OBS {
		return RegisteredOBF{}, apierr.New(http.StatusBadRequest, "bad_kind", "kind is obd or obs")
	}
	owner, err := p.st.StakeholderBy(ctx, "name", req.Owner)
	if errors.Is(err, store.ErrNotFound) {
		return RegisteredOBF{}, apierr.New(http.StatusNotFound, "owner_not_found", "no such stakeholder")
	}
	if err != nil {
		return RegisteredOBF{}, storeErr(err)
	}
	o := store.OBF{ID: uuid.NewString(), StakeholderID: owner.Tenant(), Name: req.Name, Kind: req.Kind, Trusted: req.Trusted, CreatedAt: p.now()}
	out := RegisteredOBF{}
	switch {
	case req.SubCACSR != "" || len(req.PermittedDNSDomains)+len(req.PermittedURIDomains) > 0:
		return out, errSubCARetired
	case !req.Trusted && req.ClientCSR != "":
		return out, apierr.New(http.StatusBadRequest, "untrusted_obf_certificate", "an untrusted OBF gets no certificate: it only forwards the bundle")
	case req.Trusted && req.ClientCSR == "":
		return out, apierr.New(http.StatusBadRequest, "missing_csr", "a trusted OBF needs clientCsr: the key it forwards with")
	}
	if req.Trusted {
		csr, err := csrDER(req.ClientCSR)
		if err != nil {
			return out, err
		}
		// The OBF is named by a URN of its registry ID: the MEF finds it by
		// its certificate's fingerprint, the name is for people and logs.
		issued, err := p.obfCA.Issue(ctx, ca.Request{CSR: csr, Profile: ca.ProfileOBFClient, AssignedID: "obf-" + o.ID,
			URIs: []*url.URL{{Scheme: "urn", Opaque: "uuid:" + o.ID}}})
		if err != nil {
			return out, caErr(err)
		}
		fp := sha256.Sum256(issued.DER)
		o.ClientCertSHA256, o.ClientCertDER = fp[:], issued.DER
		out.ClientCert = string(ca.EncodeCertsPEM(append([]*x509.Certificate{issued.Certificate}, issued.Chain...)))
	}
	if err := p.st.CreateOBF(ctx, o, who.actor()); err != nil {
		return out, storeErr(err)
	}
	out.OBF = o
	return out, nil
}

// OBFs lists the OBFs the caller may use (an sp-admin: all).
func (p *Portal) OBFs(ctx context.Context, who Principal) ([]store.OBF, error) {
	os, err := p.st.OBFs(ctx, who.Tenant())
	return os, storeErr(err)
}

func csrDER(pemText string) ([]byte, error) {
	block, _ := pem.Decode([]byte(pemText))
	if block == nil || block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
		return nil, apierr.New(http.StatusBadRequest, "bad_csr", "the CSR must be PEM (CERTIFICATE REQUEST)")
	}
	return block.Bytes, nil
}

// caErr turns the CA's typed refusals into 400s that say why.
func caErr(err error) error {
	if code := ca.Code(err); code != "" {
		return &apierr.Error{Status: http.StatusBadRequest, Code: code, Message: err.Error(), Err: err}
	}
	return err
}

// DisableOBF (sp-admin) stops an OBF at once: forwarding, vouching and new
// enrolments for it are refused, and its certificates are revoked
// (cessationOfOperation) on the OBF CA's CRL and OCSP.
func (p *Portal) DisableOBF(ctx context.Context, who Principal, id string) error {
	if err := requireRole(who, store.RoleSPAdmin); err != nil {
		return err
	}
	err := p.st.DisableOBF(ctx, id, who.actor(), p.now(), crlreason.CessationOfOperation)
	if errors.Is(err, store.ErrNotFound) {
		return errUnknownOBF
	}
	if err == nil && p.cfg.OnOBFRevoke != nil {
		p.cfg.OnOBFRevoke()
	}
	return storeErr(err)
}
