package config

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/credfactory/credfactory/ca"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/credfactory/credfactory/hsm"
	"github.com/credfactory/credfactory/hsm/softhsm"
	"github.com/credfactory/credfactory/ratelimit"
	"go.yaml.in/yaml/v3"
)

// EnvPrefix starts every environment override.
const EnvPrefix = "CREDFACTORY_"

// Config is every setting of the server-side commands.
type Config struct {
	// DataDir holds the embedded HSM token, the CA certificates and
	// trust-anchor.pem. It comes from --data-dir, not from the file.
	DataDir string `yaml:"-"`

	HSM    HSM    `yaml:"hsm"`
	CA     CA     `yaml:"ca"`
	Keys   Keys   `yaml:"keys"`
	Server Server `yaml:"server"`
	Store  Store  `yaml:"store"`
	MAF    MAF    `yaml:"maf"`
	Portal Portal `yaml:"portal"`
	MEF    MEF    `yaml:"mef"`
	Log    Log    `yaml:"log"`
	// Limits are the per-key rate limits (README "Rate limits").
	Limits ratelimit.Config `yaml:"limits"`
}

// Store is the registry database.
type Store struct {
	URL          string        `yaml:"url" help:"sqlite:///path (default <data-dir>/registry.db) or postgres://... for PostgreSQL and CockroachDB"`
	Migrate      bool          `yaml:"migrate" help:"apply schema migrations when serve starts (credfactory migrate does it alone)"`
	MaxConns     int           `yaml:"max_conns" help:"database connections (SQLite: readers; it has one writer); 0 picks 16 for PostgreSQL, 4 for SQLite"`
	TxTimeout    time.Duration `yaml:"tx_timeout" help:"longest time one transaction attempt may take"`
	MaxRetries   int           `yaml:"max_retries" help:"retries of a transaction after serialization failures (SQLSTATE 40001) or lost connections; past them a conflict is 409 registry_contention, an outage 503 registry_unavailable"`
	RetryBackoff time.Duration `yaml:"retry_backoff" help:"bound of the random wait before a transaction's first retry; it doubles with each further retry"`
	// RetryBackoffMax caps the doubling of RetryBackoff.
	RetryBackoffMax time.Duration `yaml:"retry_backoff_max" help:"largest bound of the random wait between retries"`
	BatchMax        int           `yaml:"batch_max" help:"most redemptions committed in one transaction (group commit)"`
	BatchWindow     time.Duration `yaml:"batch_window" help:"how long a batch waits for more redemptions; 0 batches only what queued during the previous commit"`
	BatchWorkers    int           `yaml:"batch_workers" help:"batches committed in parallel (0 means 1, the best measured on SQLite and PostgreSQL)"`
	// The expiry sweep (README "Renewal and expiry"): one replica at a time,
	// by lease.
	SweepInterval time.Duration `yaml:"sweep_interval" help:"how often the expiry sweep marks tokens and credentials past their lifetime as expired (one replica sweeps at a time, by lease); 0 turns it off"`
	SweepChunk    int           `yaml:"sweep_chunk" help:"most rows the expiry sweep changes in one transaction"`
}

// Portal is the stakeholders' web portal and JSON API.
type Portal struct {
	MEFURI     string        `yaml:"mef_uri" help:"the MEF's URL put in enrolment bundles for untrusted OBFs (default https://<first host name>:<port of server.listen>)"`
	SPDomain   string        `yaml:"sp_domain" help:"the SP's domain: host of issued AE-ID URIs (default the first of server.hostnames if it is a domain name, else credfactory.localhost)"`
	TokenTTL   time.Duration `yaml:"token_ttl" help:"lifetime of an enrolment token"`
	SessionTTL time.Duration `yaml:"session_ttl" help:"lifetime of a portal login session"`
	MaxUploads int           `yaml:"max_concurrent_uploads" help:"most bulk device uploads parsed at once; one more is answered 503 with Retry-After"`
}

// MEF is the enrolment function.
type MEF struct {
	FQDN         string        `yaml:"fqdn" help:"the MEF's FQDN, the host part of KeIDs and KpsaIDs (default portal.sp_domain)"`
	MAFFQDN      string        `yaml:"maf_fqdn" help:"the MAF's FQDN, the host part of KmIDs and the MAF-ID in Km (default mef.fqdn)"`
	KeyLifetime  time.Duration `yaml:"key_lifetime" help:"lifetime of shared keys provisioned over RSPF, and the longest a trusted OBF may forward one for"`
	KeyMode      string        `yaml:"key_mode" help:"key mode of RSPF shared-key requests that name none: exporter (TS-0003 §10.3, Ke from the device's TLS session) or master (credfactory's own, Ke from the HSM master key, the key sent to the device)"`
	CertValidity time.Duration `yaml:"cert_validity" help:"lifetime of device certificates (0: the device profile's, 1 year)"`
	MaxForward   int           `yaml:"max_forward" help:"most items in one trusted-OBF forward batch"`
	RenewBefore  time.Duration `yaml:"renew_before" help:"allow EST simplereenroll only within this long before the certificate expires (0: any time while it is current)"`
	RenewAfter   time.Duration `yaml:"renew_after" help:"refuse EST simplereenroll for a certificate younger than this (each renewal adds a superseded certificate to the CRL; 0: off)"`
	// KeyAlgorithms is the enrolment key policy (docs/architecture.md
	// "Key policy"): /csrattrs advertises exactly these.
	// ESTAnswerChain puts the issuing chain after the issued certificate in
	// EST enrolment answers.
	ESTAnswerChain bool     `yaml:"est_answer_chain" help:"also put the issuing CA chain in EST simpleenroll and simplereenroll answers, for clients that build the chain from the answer instead of /cacerts; RFC 7030 §4.2.3 says the answer holds only the issued certificate (false, the default)"`
	KeyAlgorithms  []string `yaml:"key_algorithms" help:"subject key algorithms a device's CSR may use, advertised by EST /csrattrs: any of ecdsa-p256, ecdsa-p384, rsa (2048-4096 bits), ed25519 (TS-0003 §10.1.1.1 allows ecdsa-p256 only, the default)"`
}

// MAF is the credential registry's API.
type MAF struct {
	AdminClients []string `yaml:"admin_clients" help:"client certificate names (URI or DNS SAN of a certificate from the issuing CA) that may read and revoke any credential through the MAF API"`
}

// HSM is the PKCS#11 settings plus whether to run the embedded SoftHSM2.
type HSM struct {
	hsm.Config `yaml:",inline"`
	// Embedded keeps a SoftHSM2 token under the data directory, created by
	// init. Turn it off to use a network HSM named by module and token.
	Embedded bool `yaml:"embedded" help:"create and use a SoftHSM2 token under the data directory (turn off for a real HSM)"`
}

// CA is the certificate hierarchy.
type CA struct {
	RootKey         string        `yaml:"root_key" help:"RFC 7512 URI of the root CA key"`
	IssuingKey      string        `yaml:"issuing_key" help:"RFC 7512 URI of the issuing CA key"`
	OBFKey          string        `yaml:"obf_key" help:"RFC 7512 URI of the key of the CA that certifies trusted OBFs' client certificates"`
	NodeKey         string        `yaml:"node_key" help:"RFC 7512 URI of the key of the node CA, which signs Node-ID certificates (TS-0003 §10.1.1.8); init makes it, credfactory admin add-node-ca adds it to an installation made before"`
	KeyAlgorithm    string        `yaml:"key_algorithm" help:"CA key algorithm when init generates them: ecdsa-p256 or ecdsa-p384"`
	Organization    string        `yaml:"organization" help:"organisation named in the CA subjects"`
	RootValidity    time.Duration `yaml:"root_validity" help:"lifetime of the root certificate made by init"`
	IssuingValidity time.Duration `yaml:"issuing_validity" help:"lifetime of the issuing CA certificate made by init"`
	Lint            bool          `yaml:"lint" help:"lint every certificate with zlint before the HSM signs it"`
	StatusURL       string        `yaml:"status_url" help:"public base URL of the CA's CRL and OCSP (scheme, host and port only: the routes are at the root), written into every certificate the issuing CA issues as <url>/ca/v1/crl/issuing.crl and <url>/ocsp (default http://<first host name>:<port of ca.status_listen>, or https://<first host name>:<port of server.listen> without it)"`
	StatusListen    string        `yaml:"status_listen" help:"address of a plain-HTTP listener serving only the CRL and OCSP (relying parties fetch those over HTTP; the answers are signed); empty serves them on the TLS listener only"`
	CRLInterval     time.Duration `yaml:"crl_interval" help:"how often the issuing CA's CRL is regenerated, at least 1m (a revocation also regenerates it at the next fetch), and how long caches may keep it"`
	CRLValidity     time.Duration `yaml:"crl_validity" help:"CRL nextUpdate minus thisUpdate; longer than ca.crl_interval so relying parties ride out a late regeneration"`
}

// Keys are the symmetric keys in the HSM.
type Keys struct {
	KDFMaster string `yaml:"kdf_master" help:"RFC 7512 URI of the HMAC-SHA256 master key shared keys are derived from"`
	KEK       string `yaml:"kek" help:"RFC 7512 URI of the AES-256 key that seals secrets the registry keeps"`
}

// Server is the HTTPS front end.
type Server struct {
	Listen          string        `yaml:"listen" help:"address to serve HTTPS on"`
	Hostnames       []string      `yaml:"hostnames" help:"extra DNS names or IPs for the server certificate (localhost, 127.0.0.1 and ::1 are always in it)"`
	TLSKey          string        `yaml:"tls_key" help:"RFC 7512 URI of the server's TLS key"`
	CertValidity    time.Duration `yaml:"cert_validity" help:"lifetime of the server certificate (at most 90 days; renewed at init or serve start when 30 days are left)"`
	ReadTimeout     time.Duration `yaml:"read_timeout" help:"longest time to read a request, headers and body"`
	WriteTimeout    time.Duration `yaml:"write_timeout" help:"longest time to write a response"`
	IdleTimeout     time.Duration `yaml:"idle_timeout" help:"how long an idle keep-alive connection stays open"`
	MaxBodyBytes    int           `yaml:"max_body_bytes" help:"largest request body accepted; larger ones get 413"`
	MaxConns        int           `yaml:"max_conns" help:"most connections served at once"`
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout" help:"on SIGTERM, how long in-flight requests may take to finish"`
	OpsListen       string        `yaml:"ops_listen" help:"address of the plain-HTTP operations listener serving /metrics, /healthz and /readyz (never on the TLS listener: metrics tell login failures and rejection codes); loopback by default, a pod address behind a network policy in Kubernetes; empty serves no metrics"`
	TLSGroups       []string      `yaml:"tls_groups" help:"key exchange groups the TLS listener accepts, in order (X25519MLKEM768, X25519, P-256, P-384); empty takes Go's defaults, which put the post-quantum hybrid X25519MLKEM768 first; leaving it out saves about a fifth of a new connection's handshake CPU (bench/README.md \"New connections\") at the price of that protection"`
	Procs           int           `yaml:"procs" help:"Go's GOMAXPROCS for serve when the GOMAXPROCS environment variable is unset: how many threads run Go code at once; 0 (default) takes twice Go's own default (the CPUs available, or the container's CPU limit), so that Go code runs while other threads wait in PKCS#11 and SQLite calls (bench/README.md \"Threads\")"`
	GCPercent       int           `yaml:"gc_percent" help:"Go garbage collector target (GOGC) when the GOGC environment variable is unset: heap growth between collections, in percent of the live heap; higher spends memory to save CPU"`
	MemoryLimitMiB  int           `yaml:"memory_limit_mib" help:"soft memory limit (GOMEMLIMIT) in MiB when the GOMEMLIMIT environment variable is unset: the collector runs more often as the heap nears it, so a high gc_percent cannot grow the process past it; 0 sets none"`
	Pprof           bool          `yaml:"pprof" help:"also serve Go's /debug/pprof on the operations listener, for profiling; only when server.ops_listen is a loopback address (profiles show request contents and have no authentication)"`
}

// tlsGroups are the key exchange groups server.tls_groups may name.
var tlsGroups = map[string]tls.CurveID{
	"X25519MLKEM768": tls.X25519MLKEM768,
	"X25519":         tls.X25519,
	"P-256":          tls.CurveP256,
	"P-384":          tls.CurveP384,
}

// CurvePreferences is server.tls_groups for tls.Config; nil (Go's
// defaults) when it is empty.
func (s Server) CurvePreferences() ([]tls.CurveID, error) {
	var out []tls.CurveID
	for _, name := range s.TLSGroups {
		id, ok := tlsGroups[name]
		if !ok {
			return nil, fmt.Errorf("server.tls_groups: unknown group %q (want X25519MLKEM768, X25519, P-256 or P-384)", name)
		}
		out = append(out, id)
	}
	return out, nil
}

// Log is the process log.
type Log struct {
	Level  string `yaml:"level" help:"debug, info, warn or error"`
	Format string `yaml:"format" help:"json or text"`
	Access bool   `yaml:"access" help:"log one line per HTTP request (method, route pattern, status, duration, request ID, peer address); never bodies, query strings or headers"`
	// AuditFile, when set, takes the audit trail off the process log.
	AuditFile string `yaml:"audit_file" help:"file the audit trail (a JSON line before and after every signature by the issuing and OBF CA keys) is appended to; empty (default) writes it to the process log's stderr"`
}

// Default is the embedded configuration: SoftHSM2 under the data directory.
func Default() Config {
	h := hsm.DefaultConfig()
	return Config{
		HSM: HSM{Config: h, Embedded: true},
		CA: CA{
			RootKey:         "pkcs11:object=credfactory-root-ca;type=private",
			IssuingKey:      "pkcs11:object=credfactory-issuing-ca;type=private",
			OBFKey:          "pkcs11:object=credfactory-obf-ca;type=private",
			NodeKey:         "pkcs11:object=credfactory-node-ca;type=private",
			KeyAlgorithm:    "ecdsa-p256",
			Organization:    "credfactory",
			RootValidity:    20 * 365 * 24 * time.Hour,
			IssuingValidity: 5 * 365 * 24 * time.Hour,
			Lint:            true,
			CRLInterval:     time.Hour,
			CRLValidity:     24 * time.Hour,
		},
		Keys: Keys{
			KDFMaster: "pkcs11:object=credfactory-kdf-master;type=secret-key",
			KEK:       "pkcs11:object=credfactory-kek;type=secret-key",
		},
		Server: Server{
			Listen:          "127.0.0.1:8443",
			OpsListen:       "127.0.0.1:9090",
			TLSKey:          "pkcs11:object=credfactory-tls;type=private",
			CertValidity:    90 * 24 * time.Hour,
			ReadTimeout:     10 * time.Second,
			WriteTimeout:    10 * time.Second,
			IdleTimeout:     120 * time.Second,
			MaxBodyBytes:    4 << 20,
			MaxConns:        10000,
			ShutdownTimeout: 20 * time.Second,
			// Measured on the EST path at 64 clients (bench/README.md
			// "Garbage collection"): 400 takes about a tenth off the CPU
			// per certificate against Go's 100; the limit keeps the
			// process well under the 256 MiB it is sized for.
			GCPercent:      400,
			MemoryLimitMiB: 200,
		},
		Store: Store{
			Migrate:    true,
			TxTimeout:  10 * time.Second,
			MaxRetries: 10,
			// Full jitter in [0, 2ms], doubling to [0, 250ms]: ten retries
			// wait about 0.6s in all at most, under one tx_timeout.
			RetryBackoff:    2 * time.Millisecond,
			RetryBackoffMax: 250 * time.Millisecond,
			BatchMax:        128,
			// A minute: tokens live a day and certificates a year, so the
			// registry says "expired" within a minute of it being true.
			SweepInterval: time.Minute,
			SweepChunk:    1000,
		},
		Portal: Portal{TokenTTL: 24 * time.Hour, SessionTTL: 12 * time.Hour, MaxUploads: 4},
		MEF:    MEF{KeyLifetime: 365 * 24 * time.Hour, KeyMode: "exporter", MaxForward: 1000, RenewAfter: time.Hour, KeyAlgorithms: []string{"ecdsa-p256"}},
		Log:    Log{Level: "info", Format: "json", Access: true},
		Limits: ratelimit.DefaultConfig(),
	}
}

// DefaultFile is the config file read from the data directory when --config
// is not given.
const DefaultFile = "config.yaml"

// Load builds the configuration: defaults, then the file (path, or
// DataDir/config.yaml if it exists), then environment overrides, then paths
// derived from the data directory, then validation.
func Load(dataDir, path string) (Config, error) {
	cfg := Default()
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return cfg, fmt.Errorf("data dir: %w", err)
	}
	cfg.DataDir = abs
	if path == "" {
		if p := filepath.Join(abs, DefaultFile); fileExists(p) {
			path = p
		}
	}
	if path != "" {
		if err := decodeFile(path, &cfg); err != nil {
			return cfg, err
		}
	}
	if err := applyEnv(&cfg, os.LookupEnv); err != nil {
		return cfg, err
	}
	cfg.derive()
	if err := cfg.Validate(); err != nil {
		return cfg, err
	}
	return cfg, nil
}

func decodeFile(path string, cfg *Config) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	// An empty file decodes as io.EOF: all defaults.
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

// derive fills the settings whose defaults live under the data directory.
func (c *Config) derive() {
	host := "localhost"
	if len(c.Server.Hostnames) > 0 {
		host = c.Server.Hostnames[0]
	}
	if c.Portal.SPDomain == "" {
		// Certificates name devices under this domain, and a URI host must be
		// an FQDN: a bare "localhost" fails the pre-issuance lint. The
		// reserved .localhost TLD (RFC 6761) keeps the embedded default
		// working and obviously local; production sets it.
		c.Portal.SPDomain = "credfactory.localhost"
		if len(c.Server.Hostnames) > 0 && strings.Contains(host, ".") && net.ParseIP(host) == nil {
			c.Portal.SPDomain = host
		}
	}
	if c.Portal.MEFURI == "" {
		port := "8443"
		if _, p, err := net.SplitHostPort(c.Server.Listen); err == nil {
			port = p
		}
		c.Portal.MEFURI = "https://" + net.JoinHostPort(host, port)
	}
	if c.CA.StatusURL == "" {
		// Relying parties fetch CRLs and OCSP over plain HTTP, so the
		// plain listener is the one to name when there is one.
		scheme, addr := "https", c.Server.Listen
		if c.CA.StatusListen != "" {
			scheme, addr = "http", c.CA.StatusListen
		}
		port := "8443"
		if _, p, err := net.SplitHostPort(addr); err == nil {
			port = p
		}
		c.CA.StatusURL = scheme + "://" + net.JoinHostPort(host, port)
	}
	if c.MEF.FQDN == "" {
		c.MEF.FQDN = c.Portal.SPDomain
	}
	if c.MEF.MAFFQDN == "" {
		c.MEF.MAFFQDN = c.MEF.FQDN
	}
	if c.Store.URL == "" {
		c.Store.URL = "sqlite://" + filepath.Join(c.DataDir, "registry.db")
	}
	if !c.HSM.Embedded {
		return
	}
	dir := c.HSMDir()
	if c.HSM.PINFile == "" {
		c.HSM.PINFile = filepath.Join(dir, softhsm.PINFile)
	}
	if c.HSM.SoftHSMConf == "" {
		c.HSM.SoftHSMConf = filepath.Join(dir, softhsm.ConfFile)
	}
}

// HSMDir is where the embedded SoftHSM2 store lives.
func (c *Config) HSMDir() string { return filepath.Join(c.DataDir, "hsm") }

// TrustAnchorPath is the root certificate clients trust (README "What you get
// today").
func (c *Config) TrustAnchorPath() string { return filepath.Join(c.DataDir, "trust-anchor.pem") }

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	if err := c.HSM.Config.Validate(); err != nil {
		errs = append(errs, err)
	}
	if len(c.MEF.KeyAlgorithms) == 0 {
		errs = append(errs, errors.New("mef.key_algorithms: name at least one (ecdsa-p256 is TS-0003's)"))
	} else if _, err := ca.NewKeyPolicy(c.MEF.KeyAlgorithms); err != nil {
		errs = append(errs, fmt.Errorf("mef.key_algorithms: %w", err))
	}
	switch c.CA.KeyAlgorithm {
	case "ecdsa-p256", "ecdsa-p384":
	default:
		errs = append(errs, fmt.Errorf("ca.key_algorithm %q: want ecdsa-p256 or ecdsa-p384", c.CA.KeyAlgorithm))
	}
	for name, uri := range map[string]string{
		"ca.root_key": c.CA.RootKey, "ca.issuing_key": c.CA.IssuingKey, "ca.obf_key": c.CA.OBFKey, "ca.node_key": c.CA.NodeKey, "server.tls_key": c.Server.TLSKey,
		"keys.kdf_master": c.Keys.KDFMaster, "keys.kek": c.Keys.KEK,
	} {
		if _, err := hsm.ParseKeyURI(uri); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	if _, err := c.Server.CurvePreferences(); err != nil {
		errs = append(errs, err)
	}
	if c.Server.Procs < 0 {
		errs = append(errs, fmt.Errorf("server.procs %d: want 0 (Go's default) or more", c.Server.Procs))
	}
	if c.Server.GCPercent != -1 && c.Server.GCPercent < 25 {
		errs = append(errs, fmt.Errorf("server.gc_percent %d: want -1 (off) or at least 25", c.Server.GCPercent))
	}
	if c.Server.MemoryLimitMiB < 0 {
		errs = append(errs, fmt.Errorf("server.memory_limit_mib %d: want 0 (none) or more", c.Server.MemoryLimitMiB))
	}
	if !strings.HasPrefix(c.Store.URL, "sqlite://") && !strings.HasPrefix(c.Store.URL, "postgres://") && !strings.HasPrefix(c.Store.URL, "postgresql://") {
		errs = append(errs, errors.New("store.url: want sqlite:///PATH or postgres://HOST/DB"))
	}
	// The CRL and OCSP routes are fixed at the root (/ca/v1/crl/..., /ocsp):
	// a path would only work behind a proxy that strips it, and userinfo,
	// a query or a fragment written into every certificate's CRL DP and AIA
	// would break relying parties' fetches for the certificate's lifetime.
	if u, err := url.Parse(c.CA.StatusURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.User != nil || u.Opaque != "" || (u.Path != "" && u.Path != "/") {
		errs = append(errs, fmt.Errorf("ca.status_url %q: want an absolute http:// or https:// URL with only a scheme, host and port (no path, user, query or fragment): the status routes are served at the root", c.CA.StatusURL))
	}
	if c.CA.StatusListen != "" {
		if _, _, err := net.SplitHostPort(c.CA.StatusListen); err != nil {
			errs = append(errs, fmt.Errorf("ca.status_listen %q: want host:port", c.CA.StatusListen))
		}
	}
	// At least a minute: every regeneration pages every revoked row and
	// signs in the HSM, on every replica.
	if c.CA.CRLInterval < time.Minute || c.CA.CRLValidity <= c.CA.CRLInterval {
		errs = append(errs, fmt.Errorf("ca.crl_interval %v and ca.crl_validity %v: want an interval of at least 1m and a longer validity",
			c.CA.CRLInterval, c.CA.CRLValidity))
	}
	if c.Store.MaxRetries < 0 || c.Store.RetryBackoff < 0 || c.Store.RetryBackoffMax < c.Store.RetryBackoff {
		errs = append(errs, errors.New("store.max_retries and store.retry_backoff must not be negative, store.retry_backoff_max must be at least store.retry_backoff"))
	}
	if c.Store.SweepInterval < 0 || c.Store.SweepChunk <= 0 || c.MEF.RenewBefore < 0 || c.MEF.RenewAfter < 0 {
		errs = append(errs, errors.New("store.sweep_interval, mef.renew_before and mef.renew_after must not be negative, store.sweep_chunk must be positive"))
	}
	if c.MEF.KeyMode != "exporter" && c.MEF.KeyMode != "master" {
		errs = append(errs, fmt.Errorf("mef.key_mode %q: want exporter or master", c.MEF.KeyMode))
	}
	if c.MEF.CertValidity > 0 && c.MEF.RenewAfter >= c.MEF.CertValidity {
		// No certificate would ever be old enough to renew.
		errs = append(errs, fmt.Errorf("mef.renew_after %v must be shorter than mef.cert_validity %v", c.MEF.RenewAfter, c.MEF.CertValidity))
	}
	if c.Server.Listen == "" {
		errs = append(errs, errors.New("server.listen is empty"))
	}
	if c.Server.MaxBodyBytes <= 0 {
		errs = append(errs, errors.New("server.max_body_bytes must be positive"))
	}
	if c.Portal.MaxUploads <= 0 {
		errs = append(errs, errors.New("portal.max_concurrent_uploads must be positive"))
	}
	if c.Server.OpsListen != "" {
		if _, _, err := net.SplitHostPort(c.Server.OpsListen); err != nil {
			errs = append(errs, fmt.Errorf("server.ops_listen %q: want host:port, e.g. 127.0.0.1:9090", c.Server.OpsListen))
		}
	}
	if c.Server.Pprof && !loopback(c.Server.OpsListen) {
		errs = append(errs, fmt.Errorf("server.pprof needs server.ops_listen on a loopback address such as 127.0.0.1:9090, not %q", c.Server.OpsListen))
	}
	if err := c.Log.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Limits.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// loopback reports whether addr (host:port) can only be reached from this
// machine: pprof has no authentication, so it must not be.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Validate reports a level or format the logger does not know.
func (l Log) Validate() error {
	var errs []error
	switch l.Level {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log.level %q: want debug, info, warn or error", l.Level))
	}
	switch l.Format {
	case "json", "text":
	default:
		errs = append(errs, fmt.Errorf("log.format %q: want json or text", l.Format))
	}
	return errors.Join(errs...)
}

// AuditLogger makes the logger of the issuer keys' audit trail (package
// ca): JSON whatever log.format says, named "audit", and never filtered by
// log.level, so a quiet server still records every signature. It writes to
// log.audit_file when set (the caller closes the returned closer), else to w.
func (l Log) AuditLogger(w io.Writer) (*slog.Logger, io.Closer, error) {
	var c io.Closer = io.NopCloser(nil)
	if l.AuditFile != "" {
		f, err := os.OpenFile(l.AuditFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return nil, nil, fmt.Errorf("log.audit_file: %w", err)
		}
		w, c = f, f
	}
	return slog.New(slog.NewJSONHandler(w, nil)).With("logger", "audit"), c, nil
}

// Logger makes the process logger writing to w.
func (l Log) Logger(w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(l.Level)) // checked by Validate
	opts := &slog.HandlerOptions{Level: level}
	if l.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
