package mef

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"strings"
	"testing"
	"time"

	"github.com/credfactory/credfactory/ca"
	"github.com/credfactory/credfactory/client"
	"github.com/credfactory/credfactory/kdf"
	"github.com/credfactory/credfactory/store"
	"github.com/credfactory/credfactory/store/storetest"
)

// TestNodeIDCertificates: a device with a bound Node-ID gets a Node-ID
// certificate from the node CA, recorded as Credential-ID type 34, and
// renews it; without a node CA, without a bound Node-ID, or with a CSR
// naming anything but the bound Node-ID, the answer says why and the
// token stays unspent.
func TestNodeIDCertificates(t *testing.T) {
	storetest.Each(t, func(t *testing.T, dbURL string) {
		e := newRenewEnv(t, dbURL)
		ctx := context.Background()
		nodeKey := newKey()
		nodeCert, err := ca.CreateNodeCA(e.pki.Root, e.pki.RootKey, nodeKey.Public(), pkix.Name{CommonName: "test node CA"}, 24*time.Hour, e.now)
		if err != nil {
			t.Fatal(err)
		}
		nodeCA, err := ca.New(ca.Config{Issuer: nodeCert, Signer: nodeKey, Chain: []*x509.Certificate{nodeCert, e.pki.Root}, Lint: true,
			Profiles: []ca.Profile{ca.ProfileNodeID}})
		if err != nil {
			t.Fatal(err)
		}
		aeCert, _ := e.enrol("dev-ae") // an AE-ID certificate, for the renewal refusal

		const device, token, node = "dev-n", "dev-n-token", "urn:gsma:imei:90420156-025763-0"
		h := sha256.Sum256([]byte(token))
		if _, err := e.st.UpsertDevices(ctx, "maker", []store.Device{{ID: device}}, e.now); err != nil {
			t.Fatal(err)
		}
		if err := e.st.CreateEnrolment(ctx, store.Enrolment{TokenHash: h[:], DeviceID: device, AssignedID: "Sdev-n",
			StakeholderID: "stk", Tenant: "tenant-1", Mode: store.ModeUntrusted, ExpiresAt: e.now.Add(time.Hour), CreatedAt: e.now}); err != nil {
			t.Fatal(err)
		}
		key := newKey()
		csr := func(cn string, ext ...pkix.Extension) []byte {
			der, err := client.CSR(key, cn, token, ext...)
			if err != nil {
				t.Fatal(err)
			}
			return der
		}

		// No node CA on this installation yet.
		_, err = e.m.EnrolCert(ctx, CertRequest{CSR: csr(""), NodeID: true})
		wantCode(t, "no node CA", err, 503, "node_ca_missing")
		e.m.cfg.NodeCA = nodeCA
		// No Node-ID bound to the device.
		_, err = e.m.EnrolCert(ctx, CertRequest{CSR: csr(""), NodeID: true})
		wantCode(t, "no Node-ID bound", err, 409, "no_node_id")
		if _, err := e.st.SetNodeID(ctx, store.NodeIDChange{DeviceID: device, NodeID: node, Actor: "test", Now: e.now}); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name, code string
			csr        []byte
		}{
			{"another Node-ID", "csr_san_mismatch", csr("", uriSAN(t, "urn:gsma:imei:90420156-025763-1"))},
			{"the AE-ID's URI", "csr_san_mismatch", csr("", uriSAN(t, "https://sp.example/Sdev-n"))},
			{"the Node-ID and another", "csr_san_mismatch", csr("", uriSAN(t, node, "urn:oid:1.2.3"))},
			{"the AE-ID as CN", "csr_subject_mismatch", csr("Sdev-n")},
		} {
			_, err := e.m.EnrolCert(ctx, CertRequest{CSR: tc.csr, NodeID: true})
			wantCode(t, tc.name, err, 400, tc.code)
		}
		if en, err := e.st.Enrolment(ctx, h[:]); err != nil || en.State != store.EnrolmentIssued {
			t.Fatalf("a refusal spent the token: %+v %v", en, err)
		}

		res, err := e.m.EnrolCert(ctx, CertRequest{CSR: csr(node, uriSAN(t, node)), NodeID: true, SUID: kdf.SUIDCertMAF})
		if err != nil {
			t.Fatal(err)
		}
		leaf := res.Certificate
		if len(leaf.URIs) != 1 || leaf.URIs[0].String() != node || leaf.Subject.CommonName != node || leaf.CheckSignatureFrom(nodeCert) != nil ||
			len(res.Chain) != 1 || !res.Chain[0].Equal(nodeCert) {
			t.Fatalf("Node-ID certificate: SAN %v CN %q chain %d", leaf.URIs, leaf.Subject.CommonName, len(res.Chain))
		}
		c := e.credential(leaf)
		if !strings.HasPrefix(c.ID, "34-") || c.SUID != int(kdf.SUIDCertMAF) || c.AssignedID != "Sdev-n" || c.DeviceID != device {
			t.Fatalf("recorded as %+v", c)
		}

		// Renewal: the same Node-ID, from the node CA; a retry is answered
		// with the node chain.
		e.now = e.now.Add(time.Minute)
		renewed, err := e.m.reenrolFor(ctx, leaf, csrFor(t, newKey(), ""), 0, true)
		if err != nil {
			t.Fatal(err)
		}
		if r := renewed.Certificate; r.URIs[0].String() != node || r.CheckSignatureFrom(nodeCert) != nil || !strings.HasPrefix(renewed.Credential.ID, "34-") {
			t.Fatalf("renewal: %v %s", r.URIs, renewed.Credential.ID)
		}
		if got := e.m.chainFor(renewed.Credential.ID); len(got) != 1 || !got[0].Equal(nodeCert) {
			t.Fatalf("chain of a Node-ID certificate: %v", got)
		}
		// The node-id label does not renew an AE-ID certificate.
		_, err = e.m.reenrolFor(ctx, aeCert, csrFor(t, newKey(), ""), 0, true)
		wantCode(t, "an AE-ID certificate under the node-id label", err, 400, "not_a_node_id_certificate")
	})
}

func TestESTLabels(t *testing.T) {
	for _, tc := range []struct {
		label string
		want  estSelection
		bad   bool
	}{
		{"suid-41", estSelection{suid: 41}, false},
		{"node-id", estSelection{nodeID: true}, false},
		{"node-id-suid-43", estSelection{suid: 43, nodeID: true}, false},
		{"node-idsuid-43", estSelection{}, true},
		{"node-id-", estSelection{}, true},
		{"node-id-suid-22", estSelection{}, true},
		{"node", estSelection{}, true},
	} {
		got, err := estLabel(tc.label)
		if tc.bad {
			wantCode(t, "label "+tc.label, err, 404, "unknown_est_label")
		} else if err != nil || got != tc.want {
			t.Errorf("label %s: %+v %v", tc.label, got, err)
		}
	}
}
