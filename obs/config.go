package obs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/credfactory/credfactory/ca"
	"github.com/credfactory/credfactory/config"
	"github.com/credfactory/credfactory/hsm"
	"github.com/credfactory/credfactory/hsm/softhsm"
	"go.yaml.in/yaml/v3"
)

// MaxBatch is the most items one forward request may carry (the SP's
// mef.max_forward default and the limit).
const MaxBatch = 1000

// Config is an OBS's YAML file. Relative paths are relative to the file's
// directory, so a line's directory can be moved as a whole.
type Config struct {
	// SPURL is the SP's base URL (https://host:port).
	SPURL string `yaml:"sp_url"`
	// TrustAnchor is the SP's root certificate (PEM): the only root the
	// OBS trusts for the SP's TLS certificate and its own chains.
	TrustAnchor string `yaml:"trust_anchor"`
	// ClientCert is the PEM chain the portal issued for the OBS's mTLS key.
	ClientCert string `yaml:"client_cert"`
	// ClientKey is the RFC 7512 URI of that key in the OBS's HSM.
	ClientKey string `yaml:"client_key"`
	// SubCACert is the PEM chain of the sub-CA the portal issued.
	SubCACert string `yaml:"sub_ca_cert"`
	// SubCAKey is the RFC 7512 URI of the sub-CA key in the OBS's HSM.
	SubCAKey string `yaml:"sub_ca_key"`
	// SPDomain is the host of device URIs: //<sp_domain>/<assigned ID>, as
	// the SP's portal.sp_domain.
	SPDomain string `yaml:"sp_domain"`
	// FQDN is the OBS's own name, the host part of the shared keys' IDs
	// (<hex>@<fqdn>); default the first permitted DNS domain of the sub-CA.
	FQDN string `yaml:"fqdn"`
	HSM  HSM    `yaml:"hsm"`
	// Spool is the work directory: in/, out/, outbox/, refused/.
	Spool string `yaml:"spool"`
	// BatchSize is the most items per forward request (1-1000).
	BatchSize int `yaml:"batch_size"`
	// FlushInterval is how often run polls in/ and sends the outbox.
	FlushInterval time.Duration `yaml:"flush_interval"`
	// RetryTimeout bounds how long one send keeps retrying a batch the SP
	// did not answer (or answered 503/429) before it gives up for now.
	RetryTimeout time.Duration `yaml:"retry_timeout"`
	// CertValidity is the lifetime of device certificates (at most the
	// device profile's year), clamped inside the sub-CA's validity.
	CertValidity time.Duration `yaml:"cert_validity"`
	// KeyLifetime is the lifetime of the shared keys the OBS makes.
	KeyLifetime time.Duration `yaml:"key_lifetime"`
	Log         Log           `yaml:"log"`

	// Dir is the config file's directory (relative paths start there).
	Dir string `yaml:"-"`
}

// HSM is the OBS's own PKCS#11 token. The PIN comes from
// CREDFACTORY_HSM_PIN or pin_file, never from the file itself.
type HSM struct {
	hsm.Config `yaml:",inline"`
	// Embedded keeps a SoftHSM2 token under Dir, created by init-keys.
	Embedded bool `yaml:"embedded"`
	// Dir holds the embedded token store (softhsm2.conf, tokens/, hsm-pin).
	Dir string `yaml:"dir"`
}

// Log is the process log, configured as the server's is.
type Log = config.Log

// Default is the configuration before the file: an embedded SoftHSM token
// under ./hsm and a spool under ./spool.
func Default() Config {
	h := hsm.DefaultConfig()
	h.TokenLabel = "credfactory-obs"
	return Config{
		ClientKey:     "pkcs11:object=credfactory-obs-client;type=private",
		SubCAKey:      "pkcs11:object=credfactory-obs-sub-ca;type=private",
		HSM:           HSM{Config: h, Embedded: true, Dir: "hsm"},
		Spool:         "spool",
		BatchSize:     100,
		FlushInterval: 2 * time.Second,
		RetryTimeout:  time.Minute,
		CertValidity:  ca.DefaultDeviceValidity,
		KeyLifetime:   365 * 24 * time.Hour,
		Log:           Log{Level: "info", Format: "json"},
	}
}

// Load reads path strictly (an unknown key is an error), fills defaults,
// resolves relative paths against the file's directory and validates what
// every subcommand needs. Run additionally calls CheckRun.
func Load(path string) (Config, error) {
	cfg := Default()
	if path == "" {
		return cfg, errors.New("no config file: give --config")
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("read config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return cfg, err
	}
	cfg.Dir = filepath.Dir(abs)
	cfg.derive()
	return cfg, cfg.Validate()
}

func (c *Config) path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.Dir, p)
}

func (c *Config) derive() {
	c.TrustAnchor = c.path(c.TrustAnchor)
	c.ClientCert = c.path(c.ClientCert)
	c.SubCACert = c.path(c.SubCACert)
	c.Spool = c.path(c.Spool)
	c.HSM.Dir = c.path(c.HSM.Dir)
	c.HSM.PINFile = c.path(c.HSM.PINFile)
	c.HSM.SoftHSMConf = c.path(c.HSM.SoftHSMConf)
	if c.HSM.Embedded && c.HSM.Dir != "" {
		// softhsm.Provision puts both here; a different setting could
		// only point at the wrong token.
		if c.HSM.PINFile == "" {
			c.HSM.PINFile = filepath.Join(c.HSM.Dir, softhsm.PINFile)
		}
		if c.HSM.SoftHSMConf == "" {
			c.HSM.SoftHSMConf = filepath.Join(c.HSM.Dir, softhsm.ConfFile)
		}
	}
	c.SPURL = strings.TrimRight(c.SPURL, "/")
	c.FQDN = strings.ToLower(c.FQDN)
}

// Validate reports every problem that does not need the SP's answers
// (certificates), so init-keys can run on a fresh file.
func (c *Config) Validate() error {
	var errs []error
	if err := c.HSM.Config.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.HSM.Embedded {
		switch {
		case c.HSM.Dir == "":
			errs = append(errs, errors.New("hsm.dir: an embedded token needs a directory"))
		case c.HSM.TokenLabel == "":
			errs = append(errs, errors.New("hsm.token_label: an embedded token is found by its label"))
		case c.HSM.PINFile != filepath.Join(c.HSM.Dir, softhsm.PINFile) || c.HSM.SoftHSMConf != filepath.Join(c.HSM.Dir, softhsm.ConfFile):
			errs = append(errs, errors.New("hsm.pin_file and hsm.softhsm2_conf: an embedded token keeps them in hsm.dir; leave them unset"))
		}
	}
	for _, k := range [][2]string{{"client_key", c.ClientKey}, {"sub_ca_key", c.SubCAKey}} {
		name := k[0]
		ref, err := hsm.ParseKeyURI(k[1])
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		case ref.Class != hsm.ClassPrivate:
			errs = append(errs, fmt.Errorf("%s: want type=private", name))
		}
	}
	if c.ClientKey == c.SubCAKey {
		errs = append(errs, errors.New("client_key and sub_ca_key must be different keys"))
	}
	if c.Spool == "" {
		errs = append(errs, errors.New("spool is empty"))
	}
	if c.BatchSize < 1 || c.BatchSize > MaxBatch {
		errs = append(errs, fmt.Errorf("batch_size %d: want 1 to %d", c.BatchSize, MaxBatch))
	}
	if c.FlushInterval <= 0 {
		errs = append(errs, errors.New("flush_interval must be positive"))
	}
	if c.RetryTimeout <= 0 {
		errs = append(errs, errors.New("retry_timeout must be positive"))
	}
	if c.CertValidity <= 0 || c.CertValidity > ca.DefaultDeviceValidity {
		errs = append(errs, fmt.Errorf("cert_validity %v: want more than 0 and at most %v (the device profile's)", c.CertValidity, ca.DefaultDeviceValidity))
	}
	if c.KeyLifetime <= 0 {
		errs = append(errs, errors.New("key_lifetime must be positive"))
	}
	if err := c.Log.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// CheckRun reports what run needs beyond Validate: the SP and the
// certificates the portal issued.
func (c *Config) CheckRun() error {
	var errs []error
	if u, err := url.Parse(c.SPURL); c.SPURL == "" || err != nil || u.Scheme != "https" || u.Host == "" {
		errs = append(errs, fmt.Errorf("sp_url %q: want https://host[:port]", c.SPURL))
	}
	for _, f := range [][2]string{{"trust_anchor", c.TrustAnchor}, {"client_cert", c.ClientCert}, {"sub_ca_cert", c.SubCACert}} {
		if f[1] == "" {
			errs = append(errs, fmt.Errorf("%s is empty", f[0]))
		}
	}
	if c.SPDomain == "" {
		errs = append(errs, errors.New("sp_domain is empty: set it to the SP's portal.sp_domain"))
	}
	return errors.Join(errs...)
}
