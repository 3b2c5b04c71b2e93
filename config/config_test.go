package config

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestEverySettingHasEnvAndHelp(t *testing.T) {
	seen := map[string]bool{}
	for _, s := range Settings() {
		if s.Help == "" {
			t.Errorf("%s has no help text", s.Key)
		}
		if seen[s.Env] {
			t.Errorf("%s: env name %s used twice", s.Key, s.Env)
		}
		seen[s.Env] = true
	}
	for _, want := range []string{"CREDFACTORY_HSM_MAX_SESSIONS", "CREDFACTORY_SERVER_LISTEN", "CREDFACTORY_HSM_EMBEDDED"} {
		if !seen[want] {
			t.Errorf("no setting for %s", want)
		}
	}
	if !strings.Contains(Help(), "hsm.wait_timeout") {
		t.Error("help misses hsm.wait_timeout")
	}
}

func TestLoad(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		env     map[string]string
		wantErr string
		check   func(t *testing.T, c Config)
	}{
		{name: "defaults", check: func(t *testing.T, c Config) {
			if c.Server.Listen != "127.0.0.1:8443" || !c.HSM.Embedded || c.HSM.MaxSessions != 2 {
				t.Fatalf("defaults: %+v", c)
			}
			if !strings.HasSuffix(c.HSM.PINFile, "/hsm/hsm-pin") {
				t.Fatalf("pin file not derived from the data dir: %s", c.HSM.PINFile)
			}
		}},
		{name: "empty file", file: "", check: func(t *testing.T, c Config) {}},
		{name: "file", file: "hsm:\n  max_sessions: 8\n  wait_timeout: 250ms\nserver:\n  hostnames: [a.example, 10.0.0.1]\n",
			check: func(t *testing.T, c Config) {
				if c.HSM.MaxSessions != 8 || c.HSM.WaitTimeout != 250*time.Millisecond || len(c.Server.Hostnames) != 2 {
					t.Fatalf("file not applied: %+v", c)
				}
			}},
		{name: "env beats file", file: "server:\n  listen: 127.0.0.1:1\n",
			env: map[string]string{"CREDFACTORY_SERVER_LISTEN": "127.0.0.1:2", "CREDFACTORY_SERVER_HOSTNAMES": "x.example, y.example"},
			check: func(t *testing.T, c Config) {
				if c.Server.Listen != "127.0.0.1:2" || strings.Join(c.Server.Hostnames, "|") != "x.example|y.example" {
					t.Fatalf("env not applied: %+v", c.Server)
				}
			}},
		{name: "unknown key", file: "server:\n  lisen: 127.0.0.1:1\n", wantErr: "field lisen not found"},
		{name: "unknown section", file: "hsmm: {}\n", wantErr: "field hsmm not found"},
		{name: "bad env", env: map[string]string{"CREDFACTORY_HSM_MAX_SESSIONS": "many"}, wantErr: "CREDFACTORY_HSM_MAX_SESSIONS"},
		{name: "bad value", file: "log:\n  level: loud\n", wantErr: "log.level"},
		{name: "bad key uri", file: "ca:\n  root_key: pkcs11:object=x\n", wantErr: "ca.root_key"},
		{name: "pprof on a loopback ops listener", file: "server:\n  pprof: true\n  ops_listen: 127.0.0.1:6060\n", check: func(t *testing.T, c Config) {
			if !c.Server.Pprof {
				t.Fatal("pprof not applied")
			}
		}},
		{name: "pprof beyond loopback", file: "server:\n  pprof: true\n  ops_listen: 0.0.0.0:9090\n", wantErr: "server.pprof"},
		{name: "pprof without an ops listener", file: "server:\n  pprof: true\n  ops_listen: \"\"\n", wantErr: "server.pprof"},
		{name: "ops listener without a port", file: "server:\n  ops_listen: localhost\n", wantErr: "server.ops_listen"},
		{name: "no ops listener", file: "server:\n  ops_listen: \"\"\n", check: func(t *testing.T, c Config) {
			if c.Server.OpsListen != "" {
				t.Fatalf("ops_listen %q, want none", c.Server.OpsListen)
			}
		}},
		{name: "no token", file: "hsm:\n  token_label: \"\"\n", wantErr: "token_label"},
		{name: "status url over the TLS listener", check: func(t *testing.T, c Config) {
			if c.CA.StatusURL != "https://localhost:8443" || c.CA.CRLInterval != time.Hour || c.CA.CRLValidity <= c.CA.CRLInterval {
				t.Fatalf("CA status defaults: %+v", c.CA)
			}
		}},
		{name: "status url over the plain listener", file: "ca:\n  status_listen: 0.0.0.0:8080\nserver:\n  hostnames: [ca.sp.example]\n",
			check: func(t *testing.T, c Config) {
				if c.CA.StatusURL != "http://ca.sp.example:8080" {
					t.Fatalf("status_url %q, want http://ca.sp.example:8080", c.CA.StatusURL)
				}
			}},
		{name: "status url set", file: "ca:\n  status_listen: :8080\n  status_url: http://status.sp.example\n", check: func(t *testing.T, c Config) {
			if c.CA.StatusURL != "http://status.sp.example" {
				t.Fatalf("status_url %q", c.CA.StatusURL)
			}
		}},
		{name: "status url relative", file: "ca:\n  status_url: status.sp.example/crl\n", wantErr: "ca.status_url"},
		{name: "status url with a path", file: "ca:\n  status_url: http://status.sp.example/pki\n", wantErr: "ca.status_url"},
		{name: "status url with userinfo", file: "ca:\n  status_url: http://u:p@status.sp.example\n", wantErr: "ca.status_url"},
		{name: "status url with an empty query", file: "ca:\n  status_url: http://status.sp.example?\n", wantErr: "ca.status_url"},
		{name: "status url with a fragment", file: "ca:\n  status_url: http://status.sp.example#x\n", wantErr: "ca.status_url"},
		{name: "status url with a trailing slash", file: "ca:\n  status_listen: :8080\n  status_url: http://status.sp.example:8080/\n", check: func(t *testing.T, c Config) {
			if c.CA.StatusURL != "http://status.sp.example:8080/" {
				t.Fatalf("status_url %q", c.CA.StatusURL)
			}
		}},
		{name: "crl interval under a minute", file: "ca:\n  crl_interval: 30s\n", wantErr: "ca.crl_interval"},
		{name: "status listen without port", file: "ca:\n  status_listen: localhost\n", wantErr: "ca.status_listen"},
		{name: "key mode exporter by default", check: func(t *testing.T, c Config) {
			if c.MEF.KeyMode != "exporter" {
				t.Fatalf("mef.key_mode %q, want exporter", c.MEF.KeyMode)
			}
		}},
		{name: "key mode master", env: map[string]string{"CREDFACTORY_MEF_KEY_MODE": "master"}, check: func(t *testing.T, c Config) {
			if c.MEF.KeyMode != "master" {
				t.Fatalf("mef.key_mode %q, want master", c.MEF.KeyMode)
			}
		}},
		{name: "key mode unknown", file: "mef:\n  key_mode: hsm\n", wantErr: "mef.key_mode"},
		{name: "key policy default", check: func(t *testing.T, c Config) {
			if strings.Join(c.MEF.KeyAlgorithms, ",") != "ecdsa-p256" {
				t.Fatalf("mef.key_algorithms %v, want TS-0003's ecdsa-p256 only", c.MEF.KeyAlgorithms)
			}
		}},
		{name: "key policy from env", env: map[string]string{"CREDFACTORY_MEF_KEY_ALGORITHMS": "ecdsa-p256, ed25519"}, check: func(t *testing.T, c Config) {
			if strings.Join(c.MEF.KeyAlgorithms, ",") != "ecdsa-p256,ed25519" {
				t.Fatalf("mef.key_algorithms %v", c.MEF.KeyAlgorithms)
			}
		}},
		{name: "key policy unknown algorithm", file: "mef:\n  key_algorithms: [ecdsa-p256, dsa]\n", wantErr: "mef.key_algorithms"},
		{name: "key policy empty", file: "mef:\n  key_algorithms: []\n", wantErr: "mef.key_algorithms"},
		{name: "crl validity within the interval", file: "ca:\n  crl_interval: 2h\n  crl_validity: 1h\n", wantErr: "ca.crl_validity"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			if tc.file != "" || tc.name == "empty file" {
				if err := os.WriteFile(filepath.Join(dir, DefaultFile), []byte(tc.file), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			c, err := Load(dir, "")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

// TestExampleLimitsAreTheDefaults: deploy/config.example.yaml loads, and its
// limits section states the defaults (so the example does not mislead).
func TestExampleLimitsAreTheDefaults(t *testing.T) {
	c, err := Load(t.TempDir(), "../deploy/config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	d := Default().Limits
	if c.Limits.EnrolSource != d.EnrolSource || c.Limits.EnrolTenant != d.EnrolTenant || c.Limits.EnrolOBF != d.EnrolOBF ||
		c.Limits.TokenTenant != d.TokenTenant || c.Limits.LoginSource != d.LoginSource || c.Limits.LoginAccount != d.LoginAccount ||
		c.Limits.MaxKeys != d.MaxKeys || len(c.Limits.TrustedProxies) != 0 {
		t.Fatalf("example limits %+v, defaults %+v", c.Limits, d)
	}
	t.Setenv("CREDFACTORY_LIMITS_LOGIN_SOURCE_RATE", "0.25")
	if c, err = Load(t.TempDir(), ""); err != nil || c.Limits.LoginSource.PerSecond != 0.25 {
		t.Fatalf("a fractional rate from the environment: %v %+v", err, c.Limits.LoginSource)
	}
	t.Setenv("CREDFACTORY_LIMITS_LOGIN_SOURCE_BURST", "0")
	if _, err = Load(t.TempDir(), ""); err == nil || !strings.Contains(err.Error(), "limits.login_source.burst") {
		t.Fatalf("burst 0 with a rate: %v", err)
	}
}

// TestAuditLogger: the trail is JSON named "audit" whatever log.format and
// log.level say, on w, or appended to log.audit_file when that is set.
func TestAuditLogger(t *testing.T) {
	var buf bytes.Buffer
	l, c, err := Log{Level: "error", Format: "text"}.AuditLogger(&buf)
	if err != nil {
		t.Fatal(err)
	}
	l.Info("signed certificate", "serial", "01")
	c.Close()
	if !strings.Contains(buf.String(), `"logger":"audit"`) || !strings.Contains(buf.String(), `"serial":"01"`) {
		t.Fatalf("on w: %q", buf.String())
	}
	file := filepath.Join(t.TempDir(), "audit.log")
	for i := 0; i < 2; i++ {
		l, c, err := Log{AuditFile: file}.AuditLogger(&buf)
		if err != nil {
			t.Fatal(err)
		}
		l.Info("signed CRL")
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(raw), `"logger":"audit"`); n != 2 || strings.Count(buf.String(), "signed CRL") != 0 {
		t.Fatalf("file holds %d records (want 2, appended); w got %q", n, buf.String())
	}
	if _, _, err := (Log{AuditFile: filepath.Join(file, "not-a-dir", "x")}).AuditLogger(&buf); err == nil {
		t.Fatal("an audit file that cannot be opened was accepted")
	}
}
