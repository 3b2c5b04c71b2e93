package obs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/credfactory/credfactory/forwardapi"
	"github.com/credfactory/credfactory/hsm"
	"github.com/credfactory/credfactory/hsm/softhsm"
	"go.yaml.in/yaml/v3"
)

// MaxBatch is the most items one forward request may carry (the SP's
// mef.max_forward default).
const MaxBatch = forwardapi.MaxBatch

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
	HSM       HSM    `yaml:"hsm"`
	// Spool is the work directory: in/, out/, outbox/, refused/.
	Spool string `yaml:"spool"`
	// BatchSize is the most items per forward request (1-1000).
	BatchSize int `yaml:"batch_size"`
	// FlushInterval is how often run polls in/ and sends the outbox.
	FlushInterval time.Duration `yaml:"flush_interval"`
	// RetryTimeout bounds how long one send keeps retrying a batch the SP
	// did not answer (or answered 503/429) before it gives up for now.
	RetryTimeout time.Duration `yaml:"retry_timeout"`
	// KeyLifetime, when set, asks for this lifetime of the shared keys the
	// OBS makes; 0 takes the SP's mef.key_lifetime, which also bounds it
	// (a longer one is refused key_lifetime_exceeded). The SP's CA decides
	// certificates' lifetimes.
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

// Log is the process log: level and format as the server's (an OBS
// serves no HTTP, so it has no access log).
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Validate reports a level or format the logger does not know.
func (l Log) Validate() error {
	var errs []error
	switch l.Level {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log.level %q: want debug, info, warn or error", l.Level))
	}
	if l.Format != "json" && l.Format != "text" {
		errs = append(errs, fmt.Errorf("log.format %q: want json or text", l.Format))
	}
	return errors.Join(errs...)
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

// Default is the configuration before the file: an embedded SoftHSM token
// under ./hsm and a spool under ./spool.
func Default() Config {
	h := hsm.DefaultConfig()
	h.TokenLabel = "credfactory-obs"
	return Config{
		ClientKey:     "pkcs11:object=credfactory-obs-client;type=private",
		HSM:           HSM{Config: h, Embedded: true, Dir: "hsm"},
		Spool:         "spool",
		BatchSize:     100,
		FlushInterval: 2 * time.Second,
		RetryTimeout:  time.Minute,
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
	switch ref, err := hsm.ParseKeyURI(c.ClientKey); {
	case err != nil:
		errs = append(errs, fmt.Errorf("client_key: %w", err))
	case ref.Class != hsm.ClassPrivate:
		errs = append(errs, errors.New("client_key: want type=private"))
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
	if c.KeyLifetime < 0 {
		errs = append(errs, errors.New("key_lifetime must not be negative (0: the SP's)"))
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
	for _, f := range [][2]string{{"trust_anchor", c.TrustAnchor}, {"client_cert", c.ClientCert}} {
		if f[1] == "" {
			errs = append(errs, fmt.Errorf("%s is empty", f[0]))
		}
	}
	return errors.Join(errs...)
}
