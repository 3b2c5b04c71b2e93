package ca

import (
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"net"
	"net/url"
	"time"

	"github.com/credfactory/credfactory/nodeid"
)

// ProfileNodeID is the Node-ID certificate of TS-0003 §10.1.1.8: the
// M2M-Node-ID (TS-0001 §7.1.5) as the only URI subjectAltName, in the
// canonical form of package nodeid (a URN; an OID as urn:oid), and
// otherwise as an AE-ID certificate: keyUsage digitalSignature,
// clientAuth. A Node-ID has no host, so the issuing CA's URI name
// constraint (§10.1.1.5) cannot cover it: the node CA (CreateNodeCA)
// signs these.
const ProfileNodeID Profile = "node-id"

// NodeCRLName is the {issuer} name of the node CA's CRL, written into
// every Node-ID certificate.
const NodeCRLName = "node"

// CreateNodeCA certifies pub as the CA that signs Node-ID certificates:
// path length 0 (end entities only) and clientAuth as its only extended
// key usage, which Go and OpenSSL both apply to everything under it, so
// nothing it signs can serve TLS (it never mints a server identity), and
// its CA.Config names ProfileNodeID as the one profile it issues, so it
// signs no DNS name or IP address either.
//
// It carries no nameConstraints. RFC 5280 §4.2.1.10 applies a constraint
// only to names of its own type, and OpenSSL does so (a URN verifies
// under a CA that excludes every DNS name and IP address), but Go's
// crypto/x509 (1.26, constraints.go parseURIs) parses every URI SAN of a
// chain in which any certificate has name constraints, of any type, and
// fails a URI without a host: a Node-ID (a URN) would not verify in Go
// under any constrained CA. TestNodeCAConstraintsAndGo keeps the proof,
// so a Go release that lifts it shows up. TS-0003 §10.1's "CA
// certificates carry name constraints" is therefore met by the issuing
// CA and not by this one; docs/onem2m.md "Certificate names" says so.
func CreateNodeCA(parent *x509.Certificate, parentSigner crypto.Signer, pub crypto.PublicKey, subject pkix.Name, validity time.Duration, now time.Time) (*x509.Certificate, error) {
	return createIntermediate(parent, parentSigner, pub, subject, validity, now, 0,
		[]x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, caConstraints{})
}

// excludeAllHostNames: an empty dNSName base matches every DNS name (RFC
// 5280 §4.2.1.10; Go's and OpenSSL's matchers both read it so), and
// 0.0.0.0/0 and ::/0 every address.
func excludeAllHostNames() ([]string, []*net.IPNet) {
	return []string{""}, []*net.IPNet{
		{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
		{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)},
	}
}

// nodeIDShape is ProfileNodeID's part of Profile.shape.
func nodeIDShape(req *Request) (*leafShape, error) {
	if len(req.DNSNames)+len(req.IPAddresses) > 0 {
		return nil, newErr(ErrPolicy, nil, "profile %s takes no DNS or IP SANs", ProfileNodeID)
	}
	if len(req.URIs) != 1 {
		return nil, newErr(ErrPolicy, nil, "profile %s needs exactly one URI SAN, got %d", ProfileNodeID, len(req.URIs))
	}
	want, err := nodeid.URI(req.AssignedID)
	if err != nil {
		return nil, newErr(ErrPolicy, err, "profile %s: the Node-ID", ProfileNodeID)
	}
	u, err := checkURI(req.URIs[0])
	if err != nil {
		return nil, err
	}
	if u.String() != want.String() {
		return nil, newErr(ErrPolicy, nil, "URI SAN %q is not the Node-ID %q", u.String(), want.String())
	}
	s := &leafShape{uris: []*url.URL{want}, keyUsage: x509.KeyUsageDigitalSignature,
		extKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, validity: DefaultDeviceValidity}
	// The CN repeats the Node-ID for humans when it fits ub-common-name;
	// a longer one leaves the subject empty, which RFC 5280 §4.1.2.6
	// allows with the subjectAltName present (marked critical then).
	if len(req.AssignedID) <= maxCommonNameLen {
		s.subject = pkix.Name{CommonName: req.AssignedID}
	}
	return s, nil
}
