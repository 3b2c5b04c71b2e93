package pki

import (
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/credfactory/credfactory/ca"
	"github.com/credfactory/credfactory/config"
	"github.com/credfactory/credfactory/hsm"
)

// NodeCertFile is the node CA's certificate (ca.CreateNodeCA): it signs
// Node-ID certificates (TS-0003 §10.1.1.8), which the issuing CA's URI
// name constraint (§10.1.1.5) cannot cover.
const NodeCertFile = "ca/node.pem"

// ErrNoNodeCA: the installation was made before the node CA existed and
// nobody has run the ceremony that adds it.
var ErrNoNodeCA = errors.New("this installation has no node CA (made before Node-ID certificates): run credfactory admin add-node-ca")

// AddNodeCA is the ceremony that gives an installation made before this
// release its node CA: the node CA key generated in the HSM, its
// certificate signed by the root (every root signature on the audit
// trail, WithAudit) and written to NodeCertFile. Init runs the same step
// for a new installation. It changes nothing when the node CA is there,
// and it never runs at serve: adding a CA under the root is an operator's
// decision.
func AddNodeCA(ctx context.Context, cfg config.Config, opts ...Option) (created []string, err error) {
	o := newOptions(opts)
	root, err := readCert(path(cfg, RootCertFile))
	if err != nil {
		return nil, fmt.Errorf("%w (run credfactory init)", err)
	}
	m, rootSigner, created, err := openCeremony(ctx, cfg, []hsm.KeySpec{nodeKeySpec(cfg)}, o.audit)
	if err != nil {
		return created, fmt.Errorf("node CA: %w", err)
	}
	defer m.Close()
	if err := ca.CheckSignerMatches(root, rootSigner); err != nil {
		return created, fmt.Errorf("%s: %w", RootCertFile, err)
	}
	made, err := ensureNodeCA(ctx, cfg, m, root, rootSigner, time.Now())
	if made {
		created = append(created, "node CA certificate "+path(cfg, NodeCertFile))
	}
	return created, err
}

func nodeKeySpec(cfg config.Config) hsm.KeySpec {
	return hsm.KeySpec{URI: cfg.CA.NodeKey, Type: caKeyType(cfg)}
}

// ensureNodeCA loads the node CA certificate, or has the root certify the
// node CA key when there is none.
func ensureNodeCA(ctx context.Context, cfg config.Config, m *hsm.Module, root *x509.Certificate, rootSigner crypto.Signer, now time.Time) (bool, error) {
	nodeSigner, err := m.Signer(ctx, cfg.CA.NodeKey)
	if err != nil {
		return false, fmt.Errorf("node CA key: %w", err)
	}
	cert, made, err := loadOrCreate(path(cfg, NodeCertFile), nodeSigner, func() (*x509.Certificate, error) {
		return ca.CreateNodeCA(root, rootSigner, nodeSigner.Public(),
			pkix.Name{Organization: []string{cfg.CA.Organization}, CommonName: cfg.CA.Organization + " Node CA"}, cfg.CA.IssuingValidity, now)
	})
	if err != nil {
		return false, fmt.Errorf("node CA: %w", err)
	}
	if err := cert.CheckSignatureFrom(root); err != nil {
		return false, fmt.Errorf("%s is not signed by %s: %w", NodeCertFile, RootCertFile, err)
	}
	return made, nil
}

// openNodeCA is the node CA serve runs, or ErrNoNodeCA when the
// installation has none yet (serve goes on: Node-ID enrolments are then
// refused, every other one works).
func openNodeCA(ctx context.Context, cfg config.Config, m *hsm.Module, root *x509.Certificate, audit *slog.Logger) (*ca.CA, error) {
	cert, err := readCert(path(cfg, NodeCertFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNoNodeCA
	}
	if err != nil {
		return nil, err
	}
	if err := cert.CheckSignatureFrom(root); err != nil {
		return nil, fmt.Errorf("%s is not signed by %s: %w", NodeCertFile, RootCertFile, err)
	}
	signer, err := m.Signer(ctx, cfg.CA.NodeKey)
	if err != nil {
		return nil, fmt.Errorf("node CA key: %w", err)
	}
	// Its certificates name its own CRL (NodeCRLName) and the common OCSP
	// responder; it issues Node-ID certificates and nothing else.
	c, err := ca.New(ca.Config{Issuer: cert, Signer: signer, Chain: []*x509.Certificate{cert, root}, Lint: cfg.CA.Lint,
		CRLURL: ca.CRLURL(cfg.CA.StatusURL, ca.NodeCRLName), OCSPURL: ca.OCSPURL(cfg.CA.StatusURL), Audit: audit,
		Profiles: []ca.Profile{ca.ProfileNodeID}})
	if err != nil {
		return nil, fmt.Errorf("node CA: %w", err)
	}
	return c, nil
}
