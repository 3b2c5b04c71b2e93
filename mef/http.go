package mef

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/credfactory/credfactory/apierr"
	"github.com/credfactory/credfactory/ca"
	"github.com/credfactory/credfactory/httpapi"
	"github.com/credfactory/credfactory/kdf"
	"github.com/credfactory/credfactory/store"
	"github.com/smallstep/pkcs7"
	"github.com/valyala/fasthttp"
)

// Routes lists the MEF's endpoints (api/openapi.yaml; EST is RFC 7030 §3.2.2).
func (m *MEF) Routes() []httpapi.Route {
	return []httpapi.Route{
		{Method: "GET", Pattern: "/.well-known/est/cacerts", Handler: m.estCACerts},
		{Method: "GET", Pattern: "/.well-known/est/csrattrs", Handler: m.estCSRAttrs},
		// Enrolments are rate limited per source address first (limits.go).
		{Method: "POST", Pattern: "/.well-known/est/simpleenroll", Handler: m.perSource(m.estEnroll, estError)},
		{Method: "POST", Pattern: "/.well-known/est/simplereenroll", Handler: m.perSource(m.estReenroll, estError)},
		// The same under an EST label (RFC 7030 §3.2.2): suid-40 to
		// suid-43 choose the certificate's usage (profiles.go).
		{Method: "GET", Pattern: "/.well-known/est/{label}/cacerts", Handler: m.estLabelled(m.estCACerts)},
		{Method: "GET", Pattern: "/.well-known/est/{label}/csrattrs", Handler: m.estLabelled(m.estCSRAttrs)},
		{Method: "POST", Pattern: "/.well-known/est/{label}/simpleenroll", Handler: m.perSource(m.estLabelled(m.estEnroll), estError)},
		{Method: "POST", Pattern: "/.well-known/est/{label}/simplereenroll", Handler: m.perSource(m.estLabelled(m.estReenroll), estError)},
		{Method: "POST", Pattern: "/mef/v1/enrol", Handler: m.perSource(m.jsonEnrol, jsonAnswer)},
		{Method: "POST", Pattern: "/mef/v1/forward", Handler: m.forward},
	}
}

// EST answers errors as text (RFC 7030 §4.2.3: the body is shown to the
// operator), with the status and Retry-After a client acts on. An
// enrolment that waits on something (the HSM or the registry is down, or
// the redemption lost to concurrent ones) is answered 202 Accepted with
// Retry-After, which RFC 7030 §4.2.3 has an EST client act on by sending
// the same request again after that many seconds: nothing was written and
// the token is unspent, so the retry enrols. A rate limit stays 429: there
// the client is asked to slow down, not told its request is pending.
func estError(ctx *fasthttp.RequestCtx, err error) error {
	e := apierr.As(err)
	status := e.Status
	if e.RetryAfter > 0 && estPending(e) {
		status = http.StatusAccepted
	}
	if e.RetryAfter > 0 {
		ctx.Response.Header.Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType("text/plain; charset=utf-8")
	ctx.SetBodyString(e.Code + ": " + e.Message + "\n")
	return nil
}

// estPending: the refusals that mean "not now" rather than "no": a
// dependency unavailable (503) or registry contention (409 with
// Retry-After).
func estPending(e *apierr.Error) bool {
	return e.Status == http.StatusServiceUnavailable || e.Status == http.StatusConflict
}

// estLabelled serves an EST operation under a label: the label must name a
// usage (suid-40 to suid-43), which enrolments then record, a Node-ID
// certificate (node-id, nodeid.go), or both (node-id-suid-4N).
func (m *MEF) estLabelled(next func(*fasthttp.RequestCtx) error) func(*fasthttp.RequestCtx) error {
	return func(ctx *fasthttp.RequestCtx) error {
		sel, err := estLabel(httpapi.Param(ctx, "label"))
		if err != nil {
			return estError(ctx, err)
		}
		ctx.SetUserValue(estSUIDKey{}, sel.suid)
		ctx.SetUserValue(estNodeIDKey{}, sel.nodeID)
		return next(ctx)
	}
}

type estSUIDKey struct{}

type estNodeIDKey struct{}

// estNodeID reports whether the request's EST label chose a Node-ID
// certificate.
func estNodeID(ctx *fasthttp.RequestCtx) bool {
	b, _ := ctx.UserValue(estNodeIDKey{}).(bool)
	return b
}

// estSUID is the usage the request's EST label chose, 0 without one.
func estSUID(ctx *fasthttp.RequestCtx) kdf.SUID {
	s, _ := ctx.UserValue(estSUIDKey{}).(kdf.SUID)
	return s
}

// writePKCS7 answers certs-only (RFC 7030 §4.1.3, §4.2.3): a degenerate
// PKCS#7 SignedData (RFC 5272 Simple PKI Response), base64 with
// Content-Transfer-Encoding (§4.1.3: "base64").
func writePKCS7(ctx *fasthttp.RequestCtx, certs []*x509.Certificate) error {
	var raw []byte
	for _, c := range certs {
		raw = append(raw, c.Raw...)
	}
	der, err := pkcs7.DegenerateCertificate(raw)
	if err != nil {
		return err
	}
	ctx.SetStatusCode(http.StatusOK)
	ctx.SetContentType("application/pkcs7-mime; smime-type=certs-only")
	ctx.Response.Header.Set("Content-Transfer-Encoding", "base64")
	ctx.SetBody(wrap76(base64.StdEncoding.EncodeToString(der)))
	return nil
}

func wrap76(s string) []byte {
	var b bytes.Buffer
	for len(s) > 76 {
		b.WriteString(s[:76])
		b.WriteString("\r\n")
		s = s[76:]
	}
	b.WriteString(s)
	b.WriteString("\r\n")
	return b.Bytes()
}

func (m *MEF) estCACerts(ctx *fasthttp.RequestCtx) error {
	// The issuing chain and the root: an EST client bootstraps from here
	// (RFC 7030 §4.1.3), after checking the root out of band (the bundle's
	// trust anchor fingerprint). Under the node-id label, the CA that
	// label selects (RFC 7030 §3.2.2): the node CA and the root.
	if estNodeID(ctx) {
		if m.cfg.NodeCA == nil {
			return estError(ctx, errNoNodeCA)
		}
		return writePKCS7(ctx, append(m.cfg.NodeCA.Chain(), m.root))
	}
	return writePKCS7(ctx, append(m.ca.Chain(), m.root))
}

// estCSRAttrs answers what the MEF wants in a CSR (RFC 7030 §4.5.2):
// csrAttrsFor the key policy and, when the client presents a certificate
// this SP issued and recorded (before simplereenroll), the identity of its
// next one. An anonymous client (before simpleenroll) is not known yet:
// the answer asks for a subjectAltName, which the MEF fills in anyway.
func (m *MEF) estCSRAttrs(ctx *fasthttp.RequestCtx) error {
	var shape *certShape
	if st := ctx.TLSConnectionState(); st != nil && len(st.PeerCertificates) > 0 && m.peers != nil {
		if p, err := m.peers.Verify(st); err == nil {
			if c, err := m.reg.Get(ctx, store.ByCertSHA256, fingerprint(p.Certificate.Raw)); err == nil {
				// The device's Node-ID certificate, next or renewed, or
				// its assigned ID's.
				s, err := m.shapeFor(ctx, estNodeID(ctx) || isNodeIDCredential(c.ID), c.AssignedID, c.DeviceID)
				if err == nil {
					shape = &s
				}
			}
		}
	}
	der, err := csrAttrsFor(m.cfg.KeyPolicy, shape)
	if err != nil {
		return err
	}
	ctx.SetStatusCode(http.StatusOK)
	ctx.SetContentType("application/csrattrs")
	ctx.Response.Header.Set("Content-Transfer-Encoding", "base64")
	ctx.SetBody(wrap76(base64.StdEncoding.EncodeToString(der)))
	return nil
}

var (
	oidECPublicKey      = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}
	oidP256             = asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}
	oidP384             = asn1.ObjectIdentifier{1, 3, 132, 0, 34}
	oidECDSAWithSHA256  = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidECDSAWithSHA384  = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}
	oidRSAEncryption    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	oidSHA256WithRSA    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}
	oidEd25519          = asn1.ObjectIdentifier{1, 3, 101, 112}
	oidExtensionRequest = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 14}
)

// csrAttrsFor is the CsrAttrs (RFC 7030 §4.5.2) for a key policy:
// challengePassword (the enrolment token, TS-0003 §8.3.6); for ECDSA one
// id-ecPublicKey attribute listing the accepted curves, and the matching
// ecdsa-with-SHA* OIDs; rsaEncryption and sha256WithRSAEncryption for RSA;
// id-Ed25519 for Ed25519 - exactly what ParseCSRFor accepts. The identity
// (TS-0003 §10.1.4) is an extensionRequest attribute whose subjectAltName
// holds the names the certificate will carry, when shape is known (RFC
// 7030 §4.5.2 and RFC 8994 §6.11.7.2 use attribute values this way), and
// otherwise the subjectAltName OID.
func csrAttrsFor(p ca.KeyPolicy, shape *certShape) ([]byte, error) {
	type attribute struct {
		Type   asn1.ObjectIdentifier
		Values []any `asn1:"set"`
	}
	out := []any{oidChallengePassword}
	var curves []any
	var sigs []any
	for _, a := range p.Allowed() {
		switch a {
		case ca.KeyECDSAP256:
			curves, sigs = append(curves, oidP256), append(sigs, oidECDSAWithSHA256)
		case ca.KeyECDSAP384:
			curves, sigs = append(curves, oidP384), append(sigs, oidECDSAWithSHA384)
		case ca.KeyRSA:
			out, sigs = append(out, oidRSAEncryption), append(sigs, oidSHA256WithRSA)
		case ca.KeyEd25519:
			out = append(out, oidEd25519)
		}
	}
	if len(curves) > 0 {
		out = append(out, attribute{Type: oidECPublicKey, Values: curves})
	}
	out = append(out, sigs...)
	if shape == nil {
		return asn1.Marshal(append(out, oidSAN))
	}
	var names []asn1.RawValue
	for _, d := range shape.dns {
		names = append(names, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 2, Bytes: []byte(d)})
	}
	names = append(names, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 6, Bytes: []byte(shape.uri.String())})
	san, err := asn1.Marshal(names)
	if err != nil {
		return nil, fmt.Errorf("csrattrs: subjectAltName: %w", err)
	}
	exts := []pkix.Extension{{Id: oidSAN, Value: san}}
	return asn1.Marshal(append(out, attribute{Type: oidExtensionRequest, Values: []any{exts}}))
}

var errESTBody = fail(http.StatusBadRequest, "bad_request", "EST wants Content-Type application/pkcs10 and a base64 DER body")

// estBody decodes an application/pkcs10 body: base64 (RFC 7030 §4.2.1),
// whitespace allowed. PEM is accepted too, since curl users paste it.
func estBody(ctx *fasthttp.RequestCtx) ([]byte, error) {
	mt, _, _ := mime.ParseMediaType(string(ctx.Request.Header.ContentType()))
	if mt != "application/pkcs10" {
		return nil, fail(http.StatusUnsupportedMediaType, "unsupported_media_type", "EST wants Content-Type application/pkcs10")
	}
	body := ctx.PostBody()
	if block, _ := pem.Decode(body); block != nil {
		// A PEM armour round nothing is still no CSR.
		if len(block.Bytes) == 0 {
			return nil, errESTBody
		}
		return block.Bytes, nil
	}
	clean := bytes.Map(func(r rune) rune {
		if r == ' ' || r == '\t' || r == '\r' || r == '\n' {
			return -1
		}
		return r
	}, body)
	der := make([]byte, base64.StdEncoding.DecodedLen(len(clean)))
	n, err := base64.StdEncoding.Decode(der, clean)
	if err != nil || n == 0 {
		return nil, errESTBody
	}
	return der[:n], nil
}

func (m *MEF) estEnroll(ctx *fasthttp.RequestCtx) error {
	start := time.Now()
	csr, err := estBody(ctx)
	var res CertResult
	if err == nil {
		res, err = m.EnrolCert(ctx, CertRequest{CSR: csr, Peer: peerCert(ctx), SUID: estSUID(ctx), NodeID: estNodeID(ctx)})
	}
	m.observe("est", res.Replayed, err, start)
	if err != nil {
		return estError(ctx, err)
	}
	return m.writeIssued(ctx, res)
}

// writeIssued answers an EST enrolment. RFC 7030 §4.2.3: a certs-only
// Simple PKI Response "containing only the certificate that was issued";
// the chain is /cacerts' (§4.1.3). mef.est_answer_chain adds it after the
// certificate for clients built against servers that send it.
func (m *MEF) writeIssued(ctx *fasthttp.RequestCtx, res CertResult) error {
	if m.cfg.ESTAnswerChain {
		return writePKCS7(ctx, append([]*x509.Certificate{res.Certificate}, res.Chain...))
	}
	return writePKCS7(ctx, []*x509.Certificate{res.Certificate})
}

func peerCert(ctx *fasthttp.RequestCtx) *x509.Certificate {
	if st := ctx.TLSConnectionState(); st != nil && len(st.PeerCertificates) > 0 {
		return st.PeerCertificates[0]
	}
	return nil
}

func (m *MEF) observe(path string, replayed bool, err error, start time.Time) {
	result := errorCode(err)
	if err == nil && replayed {
		result = "replayed"
	}
	m.obs.ObserveEnrolment(path, result, time.Since(start))
}

// enrolJSON is the JSON twin of EST, and the RSPF for shared keys.
type enrolJSON struct {
	Token      string `json:"token"`
	AssignedID string `json:"assignedId"`
	RequestID  string `json:"requestId,omitempty"`
	// CSR is base64 DER or PEM.
	CSR string `json:"csr,omitempty"`
	// SUID is the certificate's usage, 40-43 (with csr; default 42).
	SUID int `json:"suid,omitempty"`
	// Identity "node-id" asks for a Node-ID certificate (with csr;
	// nodeid.go); empty is the assigned ID's.
	Identity string `json:"identity,omitempty"`
	Key      *struct {
		SUID      int      `json:"suid"`
		TargetIDs []string `json:"targetIds,omitempty"`
		Mode      string   `json:"mode,omitempty"`
	} `json:"key,omitempty"`
}

type certAnswer struct {
	CredentialID string `json:"credentialId"`
	AssignedID   string `json:"assignedId"`
	Certificate  string `json:"certificate"`
	Chain        string `json:"chain"`
	Replayed     bool   `json:"replayed,omitempty"`
}

// keyAnswer names the provisioned key. In exporter mode it never carries
// key bytes: the device derives Ke from its own TLS session (TS-0003
// §10.3) and checks that keId's relative part is its RelativeKeID.
type keyAnswer struct {
	CredentialID string      `json:"credentialId"`
	Mode         string      `json:"mode"`
	KeyID        string      `json:"keyId"`
	KeID         string      `json:"keId"`
	Key          []byte      `json:"key,omitempty"` // base64 (encoding/json)
	TargetKeys   []TargetKey `json:"targetKeys,omitempty"`
	TargetIDs    []string    `json:"targetIds"`
	EnroleeID    string      `json:"enroleeId"`
	SUID         int         `json:"suid"`
	Lifetime     time.Time   `json:"lifetime"`
	Replayed     bool        `json:"replayed,omitempty"`
}

// exporter is the RFC 5705 exporter of the request's TLS session, or nil
// when it did not come over TLS.
func exporter(ctx *fasthttp.RequestCtx) kdf.Exporter {
	st := ctx.TLSConnectionState()
	if st == nil {
		return nil
	}
	return st.ExportKeyingMaterial
}

func (m *MEF) jsonEnrol(ctx *fasthttp.RequestCtx) error {
	start := time.Now()
	var req enrolJSON
	if err := httpapi.Decode(ctx.PostBody(), &req); err != nil {
		m.observe("json", false, err, start)
		return err
	}
	if req.Token == "" || req.AssignedID == "" || (req.CSR == "") == (req.Key == nil) || req.Key != nil && (req.SUID != 0 || req.Identity != "") ||
		req.Identity != "" && req.Identity != nodeIDLabel {
		err := fail(http.StatusBadRequest, "bad_request", `give token, assignedId and exactly one of csr (with an optional certificate suid, and identity "node-id" for a Node-ID certificate) and key (its suid inside)`)
		m.observe("json", false, err, start)
		return err
	}
	ctx.Response.Header.Set("Cache-Control", "no-store")
	if req.Key != nil {
		var peer []byte
		if c := peerCert(ctx); c != nil {
			peer = fingerprint(c.Raw)
		}
		res, err := m.EnrolKey(ctx, KeyRequest{Token: req.Token, AssignedID: req.AssignedID, SUID: kdf.SUID(req.Key.SUID),
			TargetIDs: req.Key.TargetIDs, RequestID: req.RequestID, Peer: peer, Mode: req.Key.Mode, Export: exporter(ctx)})
		m.observe("json_key", res.Replayed, err, start)
		if err != nil {
			return err
		}
		c := res.Credential
		if c.TargetIDs == nil {
			c.TargetIDs = []string{}
		}
		return httpapi.JSON(ctx, http.StatusCreated, keyAnswer{CredentialID: c.ID, Mode: res.Mode, KeyID: deref(c.KeyID),
			KeID: deref(c.KeID), TargetIDs: c.TargetIDs, EnroleeID: c.AssignedID, SUID: c.SUID, Lifetime: c.NotAfter,
			Replayed: res.Replayed, Key: res.Key, TargetKeys: res.TargetKeys})
	}
	csr, err := decodeDER(req.CSR, "CERTIFICATE REQUEST")
	if err != nil {
		m.observe("json_cert", false, err, start)
		return err
	}
	res, err := m.EnrolCert(ctx, CertRequest{Token: req.Token, AssignedID: req.AssignedID, CSR: csr, Peer: peerCert(ctx),
		RequestID: req.RequestID, SUID: kdf.SUID(req.SUID), NodeID: req.Identity == nodeIDLabel})
	m.observe("json_cert", res.Replayed, err, start)
	if err != nil {
		return err
	}
	return httpapi.JSON(ctx, http.StatusCreated, certAnswer{CredentialID: res.Credential.ID, AssignedID: res.Credential.AssignedID,
		Certificate: string(ca.EncodeCertsPEM([]*x509.Certificate{res.Certificate})), Chain: string(ca.EncodeCertsPEM(res.Chain)), Replayed: res.Replayed})
}

// decodeDER takes PEM of the given type or base64 DER.
func decodeDER(s, pemType string) ([]byte, error) {
	if block, _ := pem.Decode([]byte(s)); block != nil {
		if block.Type != pemType && block.Type != "NEW "+pemType || len(block.Bytes) == 0 {
			return nil, fail(http.StatusBadRequest, "bad_encoding", "expected PEM "+pemType)
		}
		return block.Bytes, nil
	}
	der, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil || len(der) == 0 {
		return nil, fail(http.StatusBadRequest, "bad_encoding", "expected PEM or base64 DER")
	}
	return der, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
