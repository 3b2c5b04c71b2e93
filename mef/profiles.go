package mef

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/credfactory/credfactory/ca"
	"github.com/credfactory/credfactory/forwardapi"
	"github.com/credfactory/credfactory/kdf"
)

// certShape is what an assigned ID's certificate names (docs/onem2m.md
// "Certificate names"): an AE-ID certificate (TS-0003 §10.1.1.5) carries the
// AE-ID's full URI; a CSE-ID certificate (§10.1.1.7) the CSE-ID's public
// domain name as a DNS SAN, for TLS server and client alike, and its full
// URI.
type certShape struct {
	profile ca.Profile
	uri     *url.URL
	dns     []string
	// legacy is the scheme-less URI certificates carried before uri: a
	// CSR may name it, meaning the same identity; it is never issued.
	legacy *url.URL
	// id is the identity it names (the assigned ID, or a Node-ID), issuer
	// the CA that signs it (the issuing CA, or the node CA: nodeid.go) and
	// credType its Credential-ID type (TS-0003 §10.4).
	id       string
	issuer   *ca.CA
	credType kdf.CredentialType
}

// shapeFor is the certificate an enrolment or renewal asks for: the
// device's Node-ID certificate (nodeid.go) or its assigned ID's.
func (m *MEF) shapeFor(ctx context.Context, nodeID bool, assignedID, deviceID string) (certShape, error) {
	if nodeID {
		return m.nodeShape(ctx, deviceID)
	}
	return m.certShape(assignedID)
}

func (m *MEF) certShape(assignedID string) (certShape, error) {
	s := certShape{profile: ca.ProfileDevice, uri: AssignedIDURI(m.cfg.SPDomain, assignedID),
		legacy: forwardapi.LegacyAssignedIDURI(m.cfg.SPDomain, assignedID),
		id:     assignedID, issuer: m.ca, credType: CertCredentialType(assignedID)}
	if isCSEID(assignedID) {
		name, err := CSEDomainName(m.cfg.SPDomain, assignedID)
		if err != nil {
			return s, err
		}
		s.profile, s.dns = ca.ProfileCSE, []string{name}
	}
	return s, nil
}

func (s certShape) request(parsed *ca.CSR, validity time.Duration) ca.Request {
	return ca.Request{Parsed: parsed, Profile: s.profile, AssignedID: s.id, URIs: []*url.URL{s.uri},
		DNSNames: s.dns, Validity: validity}
}

// isCSEID: an SP-relative CSE-ID is "/" and one segment (TS-0004 §6.2.3);
// "/cse2/Cxyz" is a C-type AE-ID registered with that CSE.
func isCSEID(id string) bool {
	return strings.HasPrefix(id, "/") && !strings.Contains(id[1:], "/")
}

// CSEDomainName is the public domain name of an SP-relative CSE-ID
// (TS-0001 §6.5.1.1): <CSE-ID>.<SP domain>, the SP domain standing for the
// Infrastructure Node's public domain name. The CSE-ID must then be one DNS
// label: lower-case letters, digits and '-' (TS-0004's CSE-ID may also hold
// '.', '_' and capitals, which either split or break the name, and CSE-IDs
// are case-sensitive while domain names are not).
func CSEDomainName(spDomain, cseID string) (string, error) {
	stem := strings.TrimPrefix(cseID, "/")
	ok := stem != "" && len(stem) <= 63 && stem[0] != '-' && stem[len(stem)-1] != '-'
	for i := 0; ok && i < len(stem); i++ {
		c := stem[i]
		ok = c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-'
	}
	if !ok {
		return "", fail(http.StatusBadRequest, "cse_id_not_a_domain_label",
			fmt.Sprintf("CSE-ID %q has no public domain name: a CSE-ID certificate needs a CSE-ID that is one DNS label (a-z, 0-9, '-', at most 63 characters; TS-0001 §6.5.1.1)", cseID))
	}
	return stem + "." + spDomain, nil
}

// certSUIDs are the usages a certificate is issued for (TS-0004 m2m:suid
// 40-43): with the MEF, the MAF, for security associations (SAEF, the
// default) and for end-to-end security of primitives (ESPrim).
var certSUIDs = map[string]kdf.SUID{
	"40": kdf.SUIDCertMEF, "41": kdf.SUIDCertMAF, "42": kdf.SUIDCertSAEF, "43": kdf.SUIDCertESPrim,
}

// estLabelPrefix: an EST label (RFC 7030 §3.2.2, the optional path segment
// "/.well-known/est/<label>/...") "suid-<n>" selects the usage.
const estLabelPrefix = "suid-"

// certSUID reads the usage a certificate enrolment asks for: "" is the
// default, SAEF (42).
func certSUID(s string) (kdf.SUID, error) {
	if s == "" {
		return kdf.SUIDCertSAEF, nil
	}
	if suid, ok := certSUIDs[s]; ok {
		return suid, nil
	}
	return 0, fail(http.StatusBadRequest, "bad_suid",
		fmt.Sprintf("certificate usage %q is not one of 40 (MEF), 41 (MAF), 42 (SAEF, the default) or 43 (ESPrim)", s))
}

// estLabelSUID reads the usage from an EST label.
func estLabelSUID(label string) (kdf.SUID, error) {
	n, ok := strings.CutPrefix(label, estLabelPrefix)
	if !ok {
		return 0, fail(http.StatusNotFound, "unknown_est_label",
			fmt.Sprintf("EST label %q is not one this server has: suid-40, suid-41, suid-42 or suid-43 select the certificate's usage, node-id (or node-id-suid-4N) a Node-ID certificate", label))
	}
	if _, err := strconv.Atoi(n); err != nil {
		return 0, fail(http.StatusNotFound, "unknown_est_label", fmt.Sprintf("EST label %q: want suid-40 to suid-43", label))
	}
	suid, err := certSUID(n)
	if err != nil {
		f := *err.(*Failure)
		f.Status, f.Code = http.StatusNotFound, "unknown_est_label"
		return 0, &f
	}
	return suid, nil
}
