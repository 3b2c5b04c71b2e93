package clientauth

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// Errors callers map to 401.
var (
	ErrNoCertificate = errors.New("clientauth: no client certificate")
	ErrUntrusted     = errors.New("clientauth: client certificate not trusted")
)

// Verifier checks client chains against one root and the issuing CAs.
type Verifier struct {
	roots         *x509.CertPool
	intermediates *x509.CertPool
	now           func() time.Time
}

// New trusts chains from roots through intermediates.
func New(roots, intermediates []*x509.Certificate) *Verifier {
	v := &Verifier{roots: x509.NewCertPool(), intermediates: x509.NewCertPool(), now: time.Now}
	for _, c := range roots {
		v.roots.AddCert(c)
	}
	for _, c := range intermediates {
		v.intermediates.AddCert(c)
	}
	return v
}

// Peer is an authenticated client.
type Peer struct {
	Certificate *x509.Certificate
	// SHA256 of the leaf DER: how the registry finds a certificate it issued.
	SHA256 [32]byte
	// Names are the leaf's URI SANs (each https one followed by its
	// scheme-less form, the oneM2M absolute ID) and DNS SANs, in that
	// order; never the CN, which no name constraint binds.
	Names []string
}

// Verify checks the TLS peer's chain for client authentication.
func (v *Verifier) Verify(state *tls.ConnectionState) (Peer, error) {
	if state == nil || len(state.PeerCertificates) == 0 {
		return Peer{}, ErrNoCertificate
	}
	leaf := state.PeerCertificates[0]
	if leaf.IsCA {
		// A CA certificate is no client identity (RFC 5280 §4.2.1.9: its
		// key certifies others); Go's verifier would accept one as a leaf
		// if its chain and usage fit, e.g. a sub-CA under an intermediate
		// trusted here.
		return Peer{}, fmt.Errorf("%w: a CA certificate is not a client identity", ErrUntrusted)
	}
	// Only the configured intermediates: a chain the client brings could
	// run through an OBS's sub-CA, whose holder names its certificates as
	// it likes (name constraints do not bind the CN, and device URIs share
	// the SP's host). Client identities come from the SP's issuing CA.
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: v.roots, Intermediates: v.intermediates, CurrentTime: v.now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return Peer{}, fmt.Errorf("%w: %w", ErrUntrusted, err)
	}
	p := Peer{Certificate: leaf, SHA256: sha256.Sum256(leaf.Raw)}
	for _, u := range leaf.URIs {
		p.Names = append(p.Names, u.String())
		// An AE-ID or CSE-ID certificate's URI is https://<SP domain>/<ID>,
		// whose hier-part is the oneM2M absolute ID //<SP domain>/<ID>
		// (docs/onem2m.md "Certificate names"): name the peer by that too,
		// as Target lists and maf.admin_clients write it, and as
		// certificates issued before the scheme carried it.
		if u.Scheme == "https" && u.Host != "" && u.Path != "" && u.RawQuery == "" && u.Fragment == "" {
			abs := *u
			abs.Scheme = ""
			p.Names = append(p.Names, abs.String())
		}
	}
	p.Names = append(p.Names, leaf.DNSNames...)
	return p, nil
}
