package mef

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/credfactory/credfactory/ca"
	"github.com/credfactory/credfactory/kdf"
	"github.com/credfactory/credfactory/nodeid"
	"github.com/credfactory/credfactory/store"
)

// Node-ID certificates (TS-0003 §10.1.1.8; docs/onem2m.md "Certificate
// names"): a device whose Enrolling Stakeholder bound an M2M-Node-ID to it
// (portal, POST /api/v1/devices/{deviceId}/node-id) asks for one with the
// EST label "node-id" (or "node-id-suid-4N" to choose the usage too), or
// "identity": "node-id" in the JSON twin: a label is the one selector every
// EST client has (RFC 7030 §3.2.2 has labels select a CA, and the node CA
// is one), and the token stays the same token, so the stakeholder decides
// which identities the device may hold (by binding a Node-ID) and the
// device which certificate it asks for with it. The certificate names the
// Node-ID as its only URI SAN, is signed by the node CA, recorded with
// Credential-ID type 34 under the token's device and assigned ID, and
// renews with simplereenroll like any other.

// nodeIDLabel is the EST label that selects a Node-ID certificate.
const nodeIDLabel = "node-id"

var (
	errNoNodeCA = fail(http.StatusServiceUnavailable, "node_ca_missing",
		"this SP issues no Node-ID certificates yet: its operator adds the node CA with credfactory admin add-node-ca")
	errNoNodeID = fail(http.StatusConflict, "no_node_id",
		"no Node-ID is bound to this device: its Enrolling Stakeholder binds one first (POST /api/v1/devices/{deviceId}/node-id)")
	errNodeIDChanged = fail(http.StatusForbidden, "node_id_changed",
		"the certificate names a Node-ID its device no longer holds: enrol afresh")
)

// isNodeIDCredential: the Credential-ID type of Node-ID certificates.
func isNodeIDCredential(credentialID string) bool {
	t, _, err := kdf.ParseCredentialID(credentialID)
	return err == nil && t == kdf.CredentialNodeIDCert
}

// nodeShape is the Node-ID certificate of a device: its bound Node-ID,
// signed by the node CA.
func (m *MEF) nodeShape(ctx context.Context, deviceID string) (certShape, error) {
	if m.cfg.NodeCA == nil {
		return certShape{}, errNoNodeCA
	}
	d, err := m.st.Device(ctx, deviceID)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return certShape{}, errNoNodeID
		}
		return certShape{}, tokenErr(err)
	}
	if d.NodeID == nil {
		return certShape{}, errNoNodeID
	}
	u, err := nodeid.URI(*d.NodeID)
	if err != nil {
		return certShape{}, fmt.Errorf("device %s: stored Node-ID: %w", deviceID, err)
	}
	return certShape{profile: ca.ProfileNodeID, uri: u, id: *d.NodeID, issuer: m.cfg.NodeCA, credType: kdf.CredentialNodeIDCert}, nil
}

// estSelection is what an EST label chose.
type estSelection struct {
	suid   kdf.SUID
	nodeID bool
}

// estLabel reads an EST label: "suid-4N", "node-id" or "node-id-suid-4N".
func estLabel(label string) (estSelection, error) {
	var sel estSelection
	rest := label
	if r, ok := strings.CutPrefix(label, nodeIDLabel); ok {
		sel.nodeID = true
		if r == "" {
			return sel, nil
		}
		if rest, ok = strings.CutPrefix(r, "-"); !ok || rest == "" { // "node-idx", "node-id-"
			return sel, fail(http.StatusNotFound, "unknown_est_label",
				fmt.Sprintf("EST label %q: want node-id or node-id-suid-40 to node-id-suid-43", label))
		}
	}
	suid, err := estLabelSUID(rest)
	if err != nil {
		return sel, err
	}
	sel.suid = suid
	return sel, nil
}

// chainFor is the chain of a recorded certificate's issuer: the node
// CA's for a Node-ID certificate, the issuing CA's otherwise.
func (m *MEF) chainFor(credentialID string) []*x509.Certificate {
	if isNodeIDCredential(credentialID) && m.cfg.NodeCA != nil {
		return m.cfg.NodeCA.Chain()
	}
	return m.ca.Chain()
}
