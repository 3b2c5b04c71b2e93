package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/credfactory/credfactory/store"
)

var bin string

// TestMain builds the real binary: these tests run it as an operator would.
func TestMain(m *testing.M) {
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "credfactory-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		bin = filepath.Join(dir, "credfactory")
		if out, err := exec.Command("go", "build", "-buildvcs=false", "-o", bin, ".").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
			return 1
		}
		return m.Run()
	}())
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("credfactory %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// cleanEnv drops CREDFACTORY_* and SOFTHSM2_CONF from the test's environment,
// so the binary sees only what a fresh operator shell would give it.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CREDFACTORY_") && !strings.HasPrefix(kv, "SOFTHSM2_CONF=") {
			env = append(env, kv)
		}
	}
	// The operations listener's default port (9090) would collide between
	// the servers tests run at once; a test that scrapes /metrics names a
	// port of its own after this.
	return append(env, "CREDFACTORY_SERVER_OPS_LISTEN=127.0.0.1:0")
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestInitTwiceThenServeAndStop(t *testing.T) {
	dir := t.TempDir()
	first := run(t, "init", "--data-dir", dir)
	for _, want := range []string{"created SoftHSM2 token", "created HSM key pkcs11:object=credfactory-kek;type=secret-key", "created trust anchor"} {
		if !strings.Contains(first, want) {
			t.Errorf("first init output lacks %q:\n%s", want, first)
		}
	}
	anchorBefore, err := os.ReadFile(filepath.Join(dir, "trust-anchor.pem"))
	if err != nil {
		t.Fatal(err)
	}
	second := run(t, "init", "--data-dir", dir)
	if !strings.Contains(second, "nothing to do") || strings.Contains(second, "created") {
		t.Fatalf("second init was not a no-op:\n%s", second)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "trust-anchor.pem")); !bytes.Equal(after, anchorBefore) {
		t.Fatal("second init rewrote the trust anchor")
	}
	pin, _ := os.ReadFile(filepath.Join(dir, "hsm", "hsm-pin"))
	if len(pin) < 16 || strings.Contains(first+second, strings.TrimSpace(string(pin))) {
		t.Fatal("the PIN is missing or was printed")
	}

	addr, opsAddr := freePort(t), freePort(t)
	cmd := exec.Command(bin, "serve", "--data-dir", dir, "--listen", addr)
	cmd.Env = append(cleanEnv(), "CREDFACTORY_SERVER_OPS_LISTEN="+opsAddr)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logs := make(chan string, 1000)
	drained := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logs <- sc.Text()
		}
		close(logs)
		close(drained)
	}()
	// Wait only after stderr is drained: Wait closes the pipe, and the last
	// log lines ("stopped") would be lost.
	exited := make(chan error, 1)
	go func() {
		<-drained
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	// Only the trust anchor: no InsecureSkipVerify, as a device would.
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(anchorBefore) {
		t.Fatal("trust anchor is not PEM")
	}
	_, port, _ := net.SplitHostPort(addr)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	base := "https://localhost:" + port
	deadline := time.Now().Add(20 * time.Second)
	var resp *http.Response
	for {
		resp, err = client.Get(base + "/healthz")
		if err == nil || time.Now().After(deadline) {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("serve exited: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err != nil {
		t.Fatalf("healthz over TLS with the trust anchor: %v", err)
	}
	var health map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&health); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || health["status"] != "ok" {
		t.Fatalf("healthz: %d %v", resp.StatusCode, health)
	}
	if resp.TLS == nil || len(resp.TLS.VerifiedChains) == 0 {
		t.Fatal("connection was not verified against the trust anchor")
	}

	// By IP too: the certificate names 127.0.0.1.
	resp, err = client.Get("https://127.0.0.1:" + port + "/readyz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("readyz: %v %v", resp, err)
	}
	resp.Body.Close()
	// /metrics: on the operations listener, not the TLS one.
	resp, err = client.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("/metrics on the TLS listener: %d, want 404", resp.StatusCode)
	}
	resp, err = http.Get("http://" + opsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`credfactory_hsm_pool_sessions{state="max"} 2`, `credfactory_hsm_operation_duration_seconds_count{op="ping"}`} {
		if !strings.Contains(string(m), want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("serve did not exit cleanly on SIGTERM: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not stop within 15s of SIGTERM")
	}
	var all []string
	for l := range logs {
		all = append(all, l)
	}
	if !strings.Contains(strings.Join(all, "\n"), `"msg":"stopped"`) {
		t.Fatalf("no clean stop in the log:\n%s", strings.Join(all, "\n"))
	}
}

func TestServeWithoutInitSaysWhatToDo(t *testing.T) {
	cmd := exec.Command(bin, "serve", "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0")
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "credfactory init") {
		t.Fatalf("serve on an empty data dir: %v\n%s", err, out)
	}
}

func TestUnknownConfigKeyIsAnError(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte("server:\n  listn: 127.0.0.1:1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "init", "--data-dir", dir)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "listn") {
		t.Fatalf("misspelt key accepted: %v\n%s", err, out)
	}
}

func TestHelpListsEverySetting(t *testing.T) {
	out := run(t, "serve", "--help")
	for _, want := range []string{"hsm.max_sessions", "CREDFACTORY_SERVER_LISTEN", "server.max_body_bytes", "CREDFACTORY_HSM_PIN"} {
		if !strings.Contains(out, want) {
			t.Errorf("serve --help lacks %s", want)
		}
	}
}

// TestMigrate runs credfactory migrate twice on each backend: the second run
// leaves the schema alone and says so.
func TestMigrate(t *testing.T) {
	onBothBackends(t, func(t *testing.T, url string, _ []string) {
		dir := t.TempDir()
		migrate := func() string {
			cmd := exec.Command(bin, "migrate", "--data-dir", dir)
			cmd.Env = cleanEnv()
			if url != "" {
				cmd.Env = append(cmd.Env, "CREDFACTORY_STORE_URL="+url)
			}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("migrate: %v\n%s", err, out)
			}
			return string(out)
		}
		// Every migration from the first on (their number grows).
		if out := migrate(); !strings.Contains(out, "applied [1") || !strings.Contains(out, fmt.Sprintf("version %d", store.SchemaVersion())) {
			t.Fatalf("first migrate: %s", out)
		}
		if out := migrate(); !strings.Contains(out, "is current") {
			t.Fatalf("second migrate: %s", out)
		}
	})
}
