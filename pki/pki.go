package pki

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/credfactory/credfactory/ca"
	"github.com/credfactory/credfactory/config"
	"github.com/credfactory/credfactory/hsm"
	"github.com/credfactory/credfactory/hsm/softhsm"
)

// Files under the data directory.
const (
	RootCertFile    = "ca/root.pem"
	IssuingCertFile = "ca/issuing.pem"
	OBFCertFile     = "ca/obf.pem"
	ServerCertFile  = "tls/server.pem"
)

// renewBefore: the server certificate is renewed when less than this much of
// its life is left, at init or at serve start.
const renewBefore = 30 * 24 * time.Hour

// PKI is the opened key material a server runs on.
type PKI struct {
	HSM     *hsm.Module
	Root    *x509.Certificate
	Issuing *x509.Certificate
	CA      *ca.CA
	// OBFCA certifies trusted OBFs' mTLS client certificates.
	OBFCA *ca.CA
	// NodeCA signs Node-ID certificates; nil, with NodeCAErr saying why
	// (ErrNoNodeCA), on an installation that has not added it yet.
	NodeCA    *ca.CA
	NodeCAErr error
	// RootCRL is the root's CRL as init signed it, served as is; nil with
	// RootCRLErr saying why when there is none to serve.
	RootCRL    *RootCRL
	RootCRLErr error
	KDF        *hsm.HMACKey
	KEK        *hsm.AEADKey

	cfg config.Config
	// tls is the server identity (leaf and issuing CA, key in the HSM),
	// swapped whole when it is renewed.
	tls atomic.Pointer[tls.Certificate]
}

// TLS is the current server identity.
func (p *PKI) TLS() *tls.Certificate { return p.tls.Load() }

// GetCertificate serves the current identity to each handshake
// (tls.Config.GetCertificate), so a renewal needs no restart.
func (p *PKI) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return p.tls.Load(), nil
}

// RenewServerCert issues a new server certificate when less than 30 days
// are left (or the names changed) and swaps it in; it reports whether it did.
func (p *PKI) RenewServerCert(ctx context.Context) (bool, error) {
	made, err := ensureServerCert(ctx, p.cfg, p.HSM, p.CA, time.Now())
	if err != nil || !made {
		return made, err
	}
	return true, p.loadTLS(ctx)
}

// KeepServerCertFresh calls RenewServerCert twice a day until ctx ends, so
// a server that runs for months never serves an expired certificate; report
// hears of each renewal (the new certificate) and each failure.
func (p *PKI) KeepServerCertFresh(ctx context.Context, report func(renewed *tls.Certificate, err error)) {
	t := time.NewTicker(12 * time.Hour)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if renewed, err := p.RenewServerCert(ctx); err != nil {
				report(nil, err)
			} else if renewed {
				report(p.TLS(), nil)
			}
		}
	}
}

func (p *PKI) loadTLS(ctx context.Context) error {
	chain, err := readCerts(path(p.cfg, ServerCertFile))
	if err != nil {
		return err
	}
	signer, err := p.HSM.Signer(ctx, p.cfg.Server.TLSKey)
	if err != nil {
		return err
	}
	if err := ca.CheckSignerMatches(chain[0], signer); err != nil {
		return fmt.Errorf("%s: %w", ServerCertFile, err)
	}
	cert := &tls.Certificate{PrivateKey: signer, Leaf: chain[0]}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	p.tls.Store(cert)
	return nil
}

// Close closes the HSM.
func (p *PKI) Close() { p.HSM.Close() }

// KeysPresent is the readiness check of the keys serve needs (the issuing
// and OBF CA keys, the node CA's where there is one, the TLS key, the KDF
// master key and the KEK; the root's may stay offline): each must still be
// on the token, named in the error when it is not.
func (p *PKI) KeysPresent(ctx context.Context) error {
	keys := []string{p.cfg.CA.IssuingKey, p.cfg.CA.OBFKey, p.cfg.Server.TLSKey, p.cfg.Keys.KDFMaster, p.cfg.Keys.KEK}
	if p.NodeCA != nil {
		keys = append(keys, p.cfg.CA.NodeKey)
	}
	return p.HSM.KeysPresent(ctx, keys)
}

// Init runs the ceremony and reports what it created; an empty report means
// everything was already there and nothing changed.
func Init(ctx context.Context, cfg config.Config, opts ...Option) (created []string, err error) {
	o := newOptions(opts)
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	if cfg.HSM.Embedded {
		_, made, err := softhsm.Provision(cfg.HSM.Module, cfg.HSMDir(), cfg.HSM.TokenLabel)
		if err != nil {
			return nil, fmt.Errorf("embedded HSM: %w", err)
		}
		if made {
			created = append(created, fmt.Sprintf("SoftHSM2 token %q in %s (PIN in %s, mode 0600)", cfg.HSM.TokenLabel, cfg.HSMDir(), cfg.HSM.PINFile))
		}
	}
	m, rootSigner, made, err := openCeremony(ctx, cfg, keySpecs(cfg), o.audit)
	created = append(created, made...)
	if err != nil {
		return created, err
	}
	defer m.Close()
	issuingSigner, err := m.Signer(ctx, cfg.CA.IssuingKey)
	if err != nil {
		return created, err
	}
	now := time.Now()
	org := []string{cfg.CA.Organization}

	root, rootMade, err := loadOrCreate(path(cfg, RootCertFile), rootSigner, func() (*x509.Certificate, error) {
		return ca.CreateRoot(rootSigner, pkix.Name{Organization: org, CommonName: cfg.CA.Organization + " Root CA"}, cfg.CA.RootValidity, now)
	})
	if err != nil {
		return created, fmt.Errorf("root CA: %w", err)
	}
	if rootMade {
		created = append(created, "root CA certificate "+path(cfg, RootCertFile))
	}
	if made, err := ensureRootCRL(ctx, cfg, root, rootSigner, now); err != nil {
		return created, err
	} else if made {
		created = append(created, "root CRL "+path(cfg, RootCRLFile))
	}
	issuing, issuingMade, err := loadOrCreate(path(cfg, IssuingCertFile), issuingSigner, func() (*x509.Certificate, error) {
		return ca.CreateIssuingCA(root, rootSigner, issuingSigner.Public(),
			pkix.Name{Organization: org, CommonName: cfg.CA.Organization + " Issuing CA"}, cfg.CA.IssuingValidity, now, cfg.Portal.SPDomain)
	})
	if err != nil {
		return created, fmt.Errorf("issuing CA: %w", err)
	}
	if issuingMade {
		created = append(created, "issuing CA certificate "+path(cfg, IssuingCertFile))
	}
	if err := issuing.CheckSignatureFrom(root); err != nil {
		return created, fmt.Errorf("%s is not signed by %s: %w", IssuingCertFile, RootCertFile, err)
	}
	obfSigner, err := m.Signer(ctx, cfg.CA.OBFKey)
	if err != nil {
		return created, err
	}
	_, obfMade, err := loadOrCreate(path(cfg, OBFCertFile), obfSigner, func() (*x509.Certificate, error) {
		return ca.CreateOBFCA(root, rootSigner, obfSigner.Public(),
			pkix.Name{Organization: org, CommonName: cfg.CA.Organization + " OBF CA"}, cfg.CA.IssuingValidity, now)
	})
	if err != nil {
		return created, fmt.Errorf("OBF CA: %w", err)
	}
	if obfMade {
		created = append(created, "OBF CA certificate "+path(cfg, OBFCertFile))
	}
	// The node CA (Node-ID certificates); on an installation made before
	// it, a second init adds it as credfactory admin add-node-ca does.
	if made, err := ensureNodeCA(ctx, cfg, m, root, rootSigner, now); err != nil {
		return created, err
	} else if made {
		created = append(created, "node CA certificate "+path(cfg, NodeCertFile))
	}
	if changed, err := writeIfChanged(cfg.TrustAnchorPath(), ca.EncodeCertsPEM([]*x509.Certificate{root}), 0o644); err != nil {
		return created, err
	} else if changed {
		created = append(created, "trust anchor "+cfg.TrustAnchorPath())
	}

	authority, err := newCA(cfg, root, issuing, issuingSigner, o.audit)
	if err != nil {
		return created, err
	}
	serverMade, err := ensureServerCert(ctx, cfg, m, authority, now)
	if err != nil {
		return created, err
	}
	if serverMade {
		created = append(created, "server TLS certificate "+path(cfg, ServerCertFile))
	}
	return created, nil
}

// Open loads what Init made. It renews the server certificate when it is
// near expiry or no longer names the configured hosts, and checks that every
// key answers, so a serve with a broken setup fails at start, not at the
// first enrolment.
func Open(ctx context.Context, cfg config.Config, obs hsm.Observer, opts ...Option) (_ *PKI, err error) {
	o := newOptions(opts)
	root, err := readCert(path(cfg, RootCertFile))
	if err != nil {
		return nil, fmt.Errorf("%w (run credfactory init)", err)
	}
	issuing, err := readCert(path(cfg, IssuingCertFile))
	if err != nil {
		return nil, fmt.Errorf("%w (run credfactory init)", err)
	}
	if err := checkSPDomain(issuing, cfg.Portal.SPDomain); err != nil {
		return nil, err
	}
	m, err := hsm.Open(cfg.HSM.Config, obs)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	issuingSigner, err := m.Signer(ctx, cfg.CA.IssuingKey)
	if err != nil {
		return nil, err
	}
	authority, err := newCA(cfg, root, issuing, issuingSigner, o.audit)
	if err != nil {
		return nil, err
	}
	if _, err := ensureServerCert(ctx, cfg, m, authority, time.Now()); err != nil {
		return nil, err
	}
	obfCert, err := readCert(path(cfg, OBFCertFile))
	if err != nil {
		return nil, fmt.Errorf("%w (run credfactory init)", err)
	}
	obfSigner, err := m.Signer(ctx, cfg.CA.OBFKey)
	if err != nil {
		return nil, err
	}
	// The OBF CA certifies trusted OBFs' mTLS keys; each certificate names
	// its CRL and OCSP responder, which list it once the OBF is disabled.
	obfCA, err := ca.New(ca.Config{Issuer: obfCert, Signer: obfSigner, Chain: []*x509.Certificate{obfCert, root}, Lint: cfg.CA.Lint,
		CRLURL: ca.CRLURL(cfg.CA.StatusURL, ca.OBFCRLName), OCSPURL: ca.OCSPURL(cfg.CA.StatusURL), Audit: o.audit})
	if err != nil {
		return nil, fmt.Errorf("OBF CA: %w", err)
	}
	p := &PKI{HSM: m, Root: root, Issuing: issuing, CA: authority, OBFCA: obfCA, cfg: cfg}
	if p.NodeCA, p.NodeCAErr = openNodeCA(ctx, cfg, m, root, o.audit); p.NodeCAErr != nil && !errors.Is(p.NodeCAErr, ErrNoNodeCA) {
		return nil, p.NodeCAErr
	}
	p.RootCRL, p.RootCRLErr = loadRootCRL(cfg, root, time.Now())
	if err := p.loadTLS(ctx); err != nil {
		return nil, err
	}
	if p.KDF, err = m.HMACKey(cfg.Keys.KDFMaster); err != nil {
		return nil, err
	}
	if _, err := p.KDF.Sum(ctx, []byte("credfactory start-up check")); err != nil {
		return nil, fmt.Errorf("KDF master key: %w", err)
	}
	if p.KEK, err = m.AEADKey(cfg.Keys.KEK); err != nil {
		return nil, err
	}
	sealed, err := p.KEK.Seal(ctx, []byte("check"), nil)
	if err == nil {
		_, err = p.KEK.Open(ctx, sealed, nil)
	}
	if err != nil {
		return nil, fmt.Errorf("key-encryption key: %w", err)
	}
	return p, nil
}

// checkSPDomain refuses to serve with an SP domain outside the issuing
// CA's URI name constraints (fixed when init made it): every device
// certificate would be issued with a URI that no relying party accepts. An
// issuing CA made before it carried constraints passes.
func checkSPDomain(issuing *x509.Certificate, spDomain string) error {
	if len(issuing.PermittedURIDomains) == 0 {
		return nil
	}
	for _, c := range issuing.PermittedURIDomains {
		if spDomain == c || strings.HasPrefix(c, ".") && strings.HasSuffix(spDomain, c) {
			return nil
		}
	}
	return fmt.Errorf("portal.sp_domain %q is outside the issuing CA's URI name constraints %v, set when credfactory init made it: device certificates would not verify; serve with the SP domain init used, or make a new issuing CA",
		spDomain, issuing.PermittedURIDomains)
}

// openCeremony generates the keys of specs the token lacks (reporting
// each), opens the HSM and returns the root's signer with every signature
// (its own certificate, the CA certificates, the root CRL) on the audit
// trail. The caller closes m.
func openCeremony(ctx context.Context, cfg config.Config, specs []hsm.KeySpec, audit *slog.Logger) (m *hsm.Module, root crypto.Signer, created []string, err error) {
	keys, err := hsm.EnsureKeys(cfg.HSM.Config, specs)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("generate keys: %w", err)
	}
	for _, k := range keys {
		created = append(created, "HSM key "+k)
	}
	if m, err = hsm.Open(cfg.HSM.Config, nil); err != nil {
		return nil, nil, created, err
	}
	rootKey, err := m.Signer(ctx, cfg.CA.RootKey)
	if err != nil {
		m.Close()
		return nil, nil, created, err
	}
	return m, ca.AuditedSigner(rootKey, audit, cfg.CA.RootKey), created, nil
}

// caKeyType is the key type of every CA key (ca.key_algorithm).
func caKeyType(cfg config.Config) hsm.KeyType {
	if cfg.CA.KeyAlgorithm == "ecdsa-p384" {
		return hsm.KeyECDSAP384
	}
	return hsm.KeyECDSAP256
}

func keySpecs(cfg config.Config) []hsm.KeySpec {
	caType := caKeyType(cfg)
	return []hsm.KeySpec{
		{URI: cfg.CA.RootKey, Type: caType},
		{URI: cfg.CA.IssuingKey, Type: caType},
		{URI: cfg.CA.OBFKey, Type: caType},
		nodeKeySpec(cfg),
		// TLS stays P-256: every device stack speaks it (TS-0003 §10.2).
		{URI: cfg.Server.TLSKey, Type: hsm.KeyECDSAP256},
		{URI: cfg.Keys.KDFMaster, Type: hsm.KeyHMAC},
		{URI: cfg.Keys.KEK, Type: hsm.KeyAES256},
	}
}

// Option adjusts Init and Open.
type Option func(*options)

type options struct{ audit *slog.Logger }

func newOptions(opts []Option) options {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// WithAudit has every signature of the issuing and OBF CAs recorded in l
// (ca.Config.Audit), and at Init every signature of the root too.
func WithAudit(l *slog.Logger) Option { return func(o *options) { o.audit = l } }

func newCA(cfg config.Config, root, issuing *x509.Certificate, signer crypto.Signer, audit *slog.Logger) (*ca.CA, error) {
	authority, err := ca.New(ca.Config{
		Audit:  audit,
		Issuer: issuing,
		Signer: signer,
		Chain:  []*x509.Certificate{issuing, root},
		Lint:   cfg.CA.Lint,
		// Every certificate of the issuing CA names its CRL and OCSP
		// responder (TS-0003 §8.1.2.2; package castatus serves them).
		CRLURL:  ca.CRLURL(cfg.CA.StatusURL, ca.IssuingCRLName),
		OCSPURL: ca.OCSPURL(cfg.CA.StatusURL),
	})
	if err != nil {
		return nil, fmt.Errorf("issuing CA: %w", err)
	}
	return authority, nil
}

// loadOrCreate reads a CA certificate and checks it belongs to signer, or
// creates and writes it when the file does not exist.
func loadOrCreate(file string, signer crypto.Signer, create func() (*x509.Certificate, error)) (*x509.Certificate, bool, error) {
	cert, err := readCert(file)
	switch {
	case err == nil:
		if err := ca.CheckSignerMatches(cert, signer); err != nil {
			return nil, false, fmt.Errorf("%s: %w", file, err)
		}
		return cert, false, nil
	case !errors.Is(err, os.ErrNotExist):
		return nil, false, err
	}
	cert, err = create()
	if err != nil {
		return nil, false, err
	}
	if _, err := writeIfChanged(file, ca.EncodeCertsPEM([]*x509.Certificate{cert}), 0o644); err != nil {
		return nil, false, err
	}
	return cert, true, nil
}

// serverNames are the names the server certificate must carry: loopback
// always, so a local client verifies it with no -k, and the configured hosts.
func serverNames(cfg config.Config) (dns []string, ips []net.IP) {
	dns = []string{"localhost"}
	ips = []net.IP{net.IPv4(127, 0, 0, 1).To4(), net.IPv6loopback}
	for _, h := range cfg.Server.Hostnames {
		if ip := net.ParseIP(h); ip != nil {
			if v4 := ip.To4(); v4 != nil {
				ip = v4
			}
			if !slices.ContainsFunc(ips, ip.Equal) {
				ips = append(ips, ip)
			}
		} else if !slices.Contains(dns, h) {
			dns = append(dns, h)
		}
	}
	return dns, ips
}

// ensureServerCert keeps tls/server.pem valid: issued by the current issuing
// CA for the TLS key, naming every configured host, and not near expiry.
func ensureServerCert(ctx context.Context, cfg config.Config, m *hsm.Module, authority *ca.CA, now time.Time) (bool, error) {
	signer, err := m.Signer(ctx, cfg.Server.TLSKey)
	if err != nil {
		return false, err
	}
	dns, ips := serverNames(cfg)
	file := path(cfg, ServerCertFile)
	if chain, err := readCerts(file); err == nil && serverCertCurrent(chain[0], signer, authority.Issuer(), dns, ips, now) {
		return false, nil
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: dns[0]},
	}, signer)
	if err != nil {
		return false, fmt.Errorf("server certificate request: %w", err)
	}
	issued, err := authority.Issue(ctx, ca.Request{
		CSR: csr, Profile: ca.ProfileServer, DNSNames: dns, IPAddresses: ips, Validity: cfg.Server.CertValidity,
	})
	if err != nil {
		return false, fmt.Errorf("issue server certificate: %w", err)
	}
	pem := ca.EncodeCertsPEM(append([]*x509.Certificate{issued.Certificate}, issued.Chain...))
	if _, err := writeIfChanged(file, pem, 0o644); err != nil {
		return false, err
	}
	return true, nil
}

func serverCertCurrent(leaf *x509.Certificate, signer crypto.Signer, issuer *x509.Certificate, dns []string, ips []net.IP, now time.Time) bool {
	if ca.CheckSignerMatches(leaf, signer) != nil || leaf.CheckSignatureFrom(issuer) != nil {
		return false
	}
	if now.Add(renewBefore).After(leaf.NotAfter) {
		return false
	}
	for _, d := range dns {
		if !slices.Contains(leaf.DNSNames, d) {
			return false
		}
	}
	for _, ip := range ips {
		if !slices.ContainsFunc(leaf.IPAddresses, ip.Equal) {
			return false
		}
	}
	return true
}

func path(cfg config.Config, rel string) string { return filepath.Join(cfg.DataDir, rel) }

func readCert(file string) (*x509.Certificate, error) {
	certs, err := readCerts(file)
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}

func readCerts(file string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read certificate: %w", err)
	}
	certs, err := ca.ParseCertsPEM(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return certs, nil
}

// writeIfChanged writes atomically (temp file and rename) and only when the
// content differs, so a repeated init leaves files and mtimes alone.
func writeIfChanged(file string, data []byte, mode os.FileMode) (bool, error) {
	if old, err := os.ReadFile(file); err == nil && bytes.Equal(old, data) {
		return false, nil
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return false, fmt.Errorf("write %s: %w", file, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), ".tmp-*")
	if err != nil {
		return false, fmt.Errorf("write %s: %w", file, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return false, fmt.Errorf("write %s: %w", file, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return false, fmt.Errorf("write %s: %w", file, err)
	}
	if err := tmp.Close(); err != nil {
		return false, fmt.Errorf("write %s: %w", file, err)
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		return false, fmt.Errorf("write %s: %w", file, err)
	}
	return true, nil
}
