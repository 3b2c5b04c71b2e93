package maf_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/credfactory/credfactory/ca"
	"github.com/credfactory/credfactory/ca/catest"
	"github.com/credfactory/credfactory/clientauth"
	"github.com/credfactory/credfactory/kdf"
	"github.com/credfactory/credfactory/maf"
	"github.com/credfactory/credfactory/store"
)

// TestNodeIDCertificateIsKnownByItsAssignedIDOnly: a Node-ID is a name
// the device's owner binds, so a tenant could bind another tenant's Target
// name (here a URN a key of tenant 1 lists as its Target) and present the
// Node-ID certificate it then enrols for. The MAF knows such a caller by
// its assigned ID only: the key stays out of reach, its own credential does
// not, and a Node-ID certificate the registry does not hold gets nothing.
func TestNodeIDCertificateIsKnownByItsAssignedIDOnly(t *testing.T) {
	ctx := context.Background()
	st := openStore(t, "sqlite://"+t.TempDir()+"/r.db", store.Options{})
	reg := maf.New(st, nil, master, kek)
	p := catest.New(t)
	nodeKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	nodeCA, err := ca.CreateNodeCA(p.Root, p.RootKey, &nodeKey.PublicKey, pkix.Name{CommonName: "test node CA"}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	urn := "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66"
	nodeCert := func(serial int64) (tls.Certificate, [32]byte) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		u, _ := url.Parse(urn)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), URIs: []*url.URL{u}, NotBefore: time.Now().Add(-time.Minute),
			NotAfter: time.Now().Add(30 * time.Minute), KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, nodeCA, &key.PublicKey, nodeKey)
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{der, nodeCA.Raw}, PrivateKey: key}, sha256.Sum256(der)
	}
	enrolled, fp := nodeCert(1)
	leaf, _ := x509.ParseCertificate(enrolled.Certificate[0])
	serial := leaf.SerialNumber.Text(16)
	own := store.Credential{ID: fmt.Sprintf("34-%x", fp), AssignedID: "Snode", DeviceID: "dev-node", Tenant: "tenant-2",
		Type: store.TypeX509, SUID: 42, Serial: &serial, CertSHA256: fp[:], CertDER: leaf.Raw,
		NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter, Source: store.SourceRSPF}
	if err := reg.Register(ctx, own); err != nil {
		t.Fatal(err)
	}
	unrecorded, _ := nodeCert(2)

	// Tenant 1's key, for a Target that tenant 2 bound as its Node-ID.
	rel, _ := kdf.NewRelativeID()
	keID := kdf.KeID(rel, mef)
	raw, _ := kdf.KpsaContext(keID, "Svictim").Marshal()
	kpsaID, _ := kdf.KpsaID(fmt.Sprintf("%x", rel), mef)
	victim := store.Credential{ID: kdf.CredentialID(kdf.CredentialKpsaID, kpsaID), AssignedID: "Svictim", DeviceID: "dev-victim",
		Tenant: "tenant-1", Type: store.TypePSK, SUID: int(kdf.SUIDRSPFSAEF), KeyID: &kpsaID, KeID: &keID, KDFContext: raw,
		TargetIDs: []string{urn}, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), Source: store.SourceRSPF}
	if err := reg.Register(ctx, victim); err != nil {
		t.Fatal(err)
	}

	api := maf.NewAPI(reg, clientauth.New([]*x509.Certificate{p.Root}, []*x509.Certificate{p.Issuing, nodeCA}), []string{urn})
	base, as := serveAPI(t, api.OwnerNamedCAs(nodeCA), p)
	get := func(cert tls.Certificate, path string) int {
		resp, err := as(&cert).Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		name string
		cert tls.Certificate
		path string
		want int
	}{
		// The URN is also listed as an admin client: neither role follows
		// from a name the owner chose.
		{"the key of a Target it named itself after", enrolled, "/maf/v1/fetchCredentials/" + keID + "/22", http.StatusForbidden},
		{"another tenant's credential, as an admin name", enrolled, "/maf/v1/credentials/" + victim.ID, http.StatusNotFound},
		{"its own credential, by assigned ID", enrolled, "/maf/v1/credentials/" + own.ID, http.StatusOK},
		{"a Node-ID certificate the registry does not hold", unrecorded, "/maf/v1/credentials/" + own.ID, http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := get(tc.cert, tc.path); got != tc.want {
				t.Fatalf("GET %s: %d, want %d", tc.path, got, tc.want)
			}
		})
	}
}
