package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/credfactory/credfactory/store/storetest"
)

// sp is a running credfactory: the real binary, initialised into its own
// data directory, serving on loopback with the embedded SoftHSM and SQLite.
type sp struct {
	t       *testing.T
	dir     string
	base    string
	roots   *x509.CertPool
	env     []string
	initOut string
	// logs is everything serve printed; complete once stop has returned.
	logs *lockedBuffer
	// pid is the serve process's; ops is its operations listener's base
	// URL (/metrics).
	pid  int
	ops  string
	stop func()
}

// lockedBuffer collects a process's output while a test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func startSP(t *testing.T, env ...string) *sp {
	t.Helper()
	s := &sp{t: t, dir: t.TempDir(), env: append(cleanEnv(), env...), logs: &lockedBuffer{}}
	s.initOut = s.cli("init")
	addr, opsAddr := freePort(t), freePort(t)
	s.ops = "http://" + opsAddr
	cmd := exec.Command(bin, "serve", "--data-dir", s.dir, "--listen", addr)
	cmd.Env = append(s.env, "CREDFACTORY_SERVER_OPS_LISTEN="+opsAddr)
	cmd.Stdout, cmd.Stderr = s.logs, s.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.pid = cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var once sync.Once
	s.stop = func() {
		once.Do(func() {
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(20 * time.Second):
				cmd.Process.Kill()
				<-exited
			}
		})
	}
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("serve log:\n%s", s.logs.String())
		}
	})
	anchor, err := os.ReadFile(filepath.Join(s.dir, "trust-anchor.pem"))
	if err != nil {
		t.Fatal(err)
	}
	s.roots = x509.NewCertPool()
	s.roots.AppendCertsFromPEM(anchor)
	_, port, _ := net.SplitHostPort(addr)
	s.base = "https://localhost:" + port
	for deadline := time.Now().Add(30 * time.Second); ; {
		resp, err := s.client(nil).Get(s.base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		select {
		case err := <-exited:
			t.Fatalf("serve exited: %v\n%s", err, s.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve not ready: %v\n%s", err, s.logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return s
}

// cli runs a credfactory command against this SP's data directory.
func (s *sp) cli(args ...string) string {
	s.t.Helper()
	return s.cliIn("", args...)
}

func (s *sp) cliIn(stdin string, args ...string) string {
	s.t.Helper()
	cmd := exec.Command(bin, append(args, "--data-dir", s.dir)...)
	cmd.Env = s.env
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		s.t.Fatalf("credfactory %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// stakeholder creates an account and an API key for it, returning the key.
func (s *sp) stakeholder(name, role string, extra ...string) string {
	s.t.Helper()
	s.cliIn("correct horse battery staple\n", append([]string{"admin", "create-stakeholder", "--name", name, "--role", role}, extra...)...)
	return strings.TrimSpace(s.cli("admin", "create-api-key", "--stakeholder", name))
}

func (s *sp) client(cert *tls.Certificate) *http.Client {
	cfg := &tls.Config{RootCAs: s.roots}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
}

// call sends a request with an API key and decodes a JSON answer.
func (s *sp) call(key, method, path, contentType string, body []byte) (int, map[string]any) {
	s.t.Helper()
	return s.callWith(s.client(nil), key, method, path, contentType, body)
}

func (s *sp) callWith(c *http.Client, key, method, path, contentType string, body []byte) (int, map[string]any) {
	s.t.Helper()
	status, _, raw := s.send(c, key, method, path, contentType, body)
	var out map[string]any
	if len(raw) > 0 && json.Unmarshal(raw, &out) != nil {
		s.t.Fatalf("%s %s: %d, not JSON: %.300s", method, path, status, raw)
	}
	return status, out
}

// send is the one request helper under callWith and raw: the status, the
// answer's headers and its body.
func (s *sp) send(c *http.Client, key, method, path, contentType string, body []byte) (int, http.Header, []byte) {
	s.t.Helper()
	req, _ := http.NewRequest(method, s.base+path, bytes.NewReader(body))
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, raw
}

// metricsText is the server's /metrics, from its operations listener.
func (s *sp) metricsText() string {
	s.t.Helper()
	resp, err := http.Get(s.ops + "/metrics")
	if err != nil {
		s.t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		s.t.Fatalf("GET /metrics: %d %.300s", resp.StatusCode, b)
	}
	return string(b)
}

func errCode(m map[string]any) string {
	e, _ := m["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// onBothBackends runs f as a subtest on the embedded SQLite registry (url
// "") and on make test's PostgreSQL server (skipped without it, except under
// CI, where its absence fails); env selects the backend for the server.
func onBothBackends(t *testing.T, f func(t *testing.T, url string, env []string)) {
	t.Run("sqlite", func(t *testing.T) { f(t, "", nil) })
	t.Run("postgres", func(t *testing.T) {
		if os.Getenv(storetest.URLEnv) == "" && os.Getenv("CI") == "" {
			t.Skipf("%s unset: make test starts a PostgreSQL server for this case", storetest.URLEnv)
		}
		url := storetest.PostgresURL(t)
		f(t, url, []string{"CREDFACTORY_STORE_URL=" + url})
	})
}
