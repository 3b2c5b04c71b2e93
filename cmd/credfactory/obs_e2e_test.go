package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/credfactory/credfactory/ca"
	"github.com/credfactory/credfactory/forwardapi"
	"github.com/credfactory/credfactory/obs"
	_ "github.com/mattn/go-sqlite3"
)

// obsLine is a trusted OBS set up as an operator would: its own directory
// and SoftHSM token (not the SP's), keys made by `obs init-keys`,
// registered through the portal API with the CSRs it wrote.
type obsLine struct {
	t           *testing.T
	sp          *sp
	dir, config string
	spool       string
	obfID       string
	alice       string // the subscriber's API key
}

func obsPEMKey(t *testing.T) (*ecdsa.PrivateKey, string) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k) // an empty subject: the SP names the device
	if err != nil {
		t.Fatal(err)
	}
	return k, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

// obs runs `credfactory obs ARGS --config FILE` as its own process, with no
// CREDFACTORY_* or SOFTHSM2_CONF from the test's environment.
func (l *obsLine) obs(config string, args ...string) (string, error) {
	cmd := exec.Command(bin, append(append([]string{"obs"}, args...), "--config", config)...)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// writeConfig writes a config named name for this line pointing at spURL.
func (l *obsLine) writeConfig(name, spURL string) string {
	path := filepath.Join(l.dir, name)
	text := fmt.Sprintf(`sp_url: %s
trust_anchor: trust-anchor.pem
client_cert: obs-client.pem
hsm:
  embedded: true
  dir: hsm
spool: spool
batch_size: 2
flush_interval: 200ms
retry_timeout: 2s
log: {level: info, format: text}
`, spURL)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		l.t.Fatal(err)
	}
	return path
}

func newOBSLine(t *testing.T, env ...string) *obsLine {
	s := startSP(t, append([]string{"CREDFACTORY_PORTAL_SP_DOMAIN=sp.example"}, env...)...)
	admin := s.stakeholder("admin", "sp-admin")
	acme := s.stakeholder("acme", "manufacturer")
	l := &obsLine{t: t, sp: s, dir: t.TempDir(), alice: s.stakeholder("alice", "subscriber")}
	var csv strings.Builder
	csv.WriteString("deviceId,claimCode\n")
	var ids []string
	for i := 1; i <= 6; i++ {
		fmt.Fprintf(&csv, "line-%d,code-%d\n", i, i)
		ids = append(ids, fmt.Sprintf("line-%d", i))
	}
	if status, body := s.call(acme, "POST", "/api/v1/devices", "text/csv", []byte(csv.String())); status != 200 || body["accepted"] != float64(6) {
		t.Fatalf("upload: %d %v", status, body)
	}
	if status, body := s.call(acme, "POST", "/api/v1/handovers", "application/json", mustJSON(map[string]any{"subscriber": "alice", "deviceIds": ids})); status != 200 {
		t.Fatalf("hand over: %d %v", status, body)
	}

	l.spool = filepath.Join(l.dir, "spool")
	l.config = l.writeConfig("obs.yaml", s.base)
	out, err := l.obs(l.config, "init-keys")
	if err != nil || !strings.Contains(out, "created SoftHSM2 token") || !strings.Contains(out, "created HSM key pkcs11:object=credfactory-obs-client;type=private") {
		t.Fatalf("obs init-keys: %v\n%s", err, out)
	}
	// Again: the keys are kept.
	if out, err := l.obs(l.config, "init-keys"); err != nil || strings.Contains(out, "created") {
		t.Fatalf("obs init-keys again: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(s.dir, "hsm")); err != nil {
		t.Fatal("the SP's token is not where the test expects it:", err)
	}
	if filepath.Join(l.dir, "hsm") == filepath.Join(s.dir, "hsm") {
		t.Fatal("the OBS and the SP share a token directory")
	}

	// An sp-admin registers the OBS with the CSR it wrote.
	status, reg := s.call(admin, "POST", "/api/v1/obfs", "application/json", mustJSON(map[string]any{
		"name": "line-1", "kind": "obs", "trusted": true, "owner": "alice",
		"clientCsr": readFile(t, filepath.Join(l.dir, obs.ClientCSRFile)),
	}))
	if status != 201 {
		t.Fatalf("register the OBS: %d %v", status, reg)
	}
	l.obfID = reg["obfId"].(string)
	for file, pemText := range map[string]string{"obs-client.pem": reg["clientCert"].(string),
		"trust-anchor.pem": readFile(t, filepath.Join(s.dir, "trust-anchor.pem"))} {
		if err := os.WriteFile(filepath.Join(l.dir, file), []byte(pemText), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

// bundle gets the portal's bundle for device, for the OBF obfID; the
// subscriber proves control with the claim code.
func (l *obsLine) bundle(device, obfID string) map[string]any {
	l.t.Helper()
	req := map[string]any{"proof": map[string]any{"claimCode": "code-" + strings.TrimPrefix(device, "line-")}, "obfId": obfID}
	status, body := l.sp.call(l.alice, "POST", "/api/v1/devices/"+device+"/enrolments", "application/json", mustJSON(req))
	if status != 201 {
		l.t.Fatalf("bundle for %s: %d %v", device, status, body)
	}
	return body
}

func (l *obsLine) drop(name string, job map[string]any) {
	l.t.Helper()
	// As the line should: under a dot name, then renamed.
	tmp := filepath.Join(l.spool, obs.DirIn, "."+name)
	if err := os.WriteFile(tmp, mustJSON(job), 0o600); err != nil {
		l.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(l.spool, obs.DirIn, name)); err != nil {
		l.t.Fatal(err)
	}
}

func (l *obsLine) files(dir string) []string {
	l.t.Helper()
	entries, err := os.ReadDir(filepath.Join(l.spool, dir))
	if err != nil {
		l.t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func (l *obsLine) result(assignedID string) obs.Result {
	l.t.Helper()
	path := filepath.Join(l.spool, obs.DirOut, assignedID+".json")
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		l.t.Fatalf("%s: %v %v", path, st, err)
	}
	var r obs.Result
	if err := json.Unmarshal([]byte(readFile(l.t, path)), &r); err != nil {
		l.t.Fatal(err)
	}
	return r
}

// device is the portal's view of a device.
func (l *obsLine) device(id string) (string, []any) {
	l.t.Helper()
	status, d := l.sp.call(l.alice, "GET", "/api/v1/devices/"+id, "", nil)
	if status != 200 {
		l.t.Fatalf("device %s: %d %v", id, status, d)
	}
	creds, _ := d["credentials"].([]any)
	state, _ := d["state"].(string)
	return state, creds
}

func (l *obsLine) enrolledWith(id, credentialID string) {
	l.t.Helper()
	state, creds := l.device(id)
	if state != "enrolled" || len(creds) != 1 || creds[0].(map[string]any)["credentialId"] != credentialID {
		l.t.Fatalf("%s: state %q, credentials %v; want enrolled with %s", id, state, creds, credentialID)
	}
}

func obsCertJob(t *testing.T, b map[string]any) (map[string]any, *ecdsa.PrivateKey) {
	k, csr := obsPEMKey(t)
	return map[string]any{"bundle": b, "csr": csr}, k
}

func obsOpenSSLVerify(t *testing.T, anchor, leaf, chain string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "leaf.pem"), []byte(leaf), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "chain.pem"), []byte(chain), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("openssl", "verify", "-CAfile", anchor, "-untrusted", filepath.Join(dir, "chain.pem"),
		"-purpose", "sslclient", filepath.Join(dir, "leaf.pem")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), ": OK") {
		t.Fatalf("openssl verify: %v\n%s", err, out)
	}
}

// TestOBSEndToEnd: init-keys → portal registration → bundles → jobs →
// obs run --once → the SP records them; then an unreachable SP (the
// outbox keeps the item, the next run sends it; a resend is a replay); then
// another OBF's token (refused with token_mismatch, the good job recorded).
func TestOBSEndToEnd(t *testing.T) {
	l := newOBSLine(t)
	s := l.sp
	anchorPath := filepath.Join(l.dir, "trust-anchor.pem")

	// 1. A certificate job and a key job whose Target is the first device.
	b1, b2 := l.bundle("line-1", l.obfID), l.bundle("line-2", l.obfID)
	job1, devKey := obsCertJob(t, b1)
	l.drop("line-1.json", job1)
	l.drop("line-2.json", map[string]any{"bundle": b2, "key": map[string]any{"suid": 22, "targetIds": []string{b1["assignedId"].(string)}}})
	out, err := l.obs(l.config, "run", "--once")
	if err != nil || !strings.Contains(out, "provisioned 2,") || !strings.Contains(out, "recorded 2,") {
		t.Fatalf("obs run --once: %v\n%s", err, out)
	}
	if strings.Contains(out, b1["token"].(string)) || strings.Contains(out, b2["token"].(string)) {
		t.Fatal("the OBS logged a token")
	}
	if in, ob := l.files(obs.DirIn), l.files(obs.DirOutbox); len(in)+len(ob) != 0 {
		t.Fatalf("in/ %v outbox/ %v after a complete run", in, ob)
	}
	r1 := l.result(b1["assignedId"].(string))
	l.enrolledWith("line-1", r1.CredentialID)
	obsOpenSSLVerify(t, anchorPath, r1.Certificate, r1.Chain)
	leaf, _ := ca.ParseCertsPEM([]byte(r1.Certificate))
	chain, _ := ca.ParseCertsPEM([]byte(r1.Chain))
	if !leaf[0].PublicKey.(*ecdsa.PublicKey).Equal(&devKey.PublicKey) || leaf[0].URIs[0].String() != "https://sp.example/"+b1["assignedId"].(string) {
		t.Fatalf("device certificate: %v %v", leaf[0].Subject, leaf[0].URIs)
	}
	r2 := l.result(b2["assignedId"].(string))
	l.enrolledWith("line-2", r2.CredentialID)
	if r2.Key == nil || len(r2.Key.Value) != 32 || !strings.HasSuffix(r2.Key.KeyID, "@sp.example") || !strings.HasSuffix(r2.Key.KeID, "@sp.example") {
		t.Fatalf("key result: %+v", r2)
	}
	// The SP holds the very key the device got, under the IDs the SP
	// assigned: its Target (device 1, with the certificate the SP's CA
	// issued for the CSR the OBS forwarded) fetches it from the MAF.
	devTLS := &tls.Certificate{PrivateKey: devKey, Leaf: leaf[0], Certificate: [][]byte{leaf[0].Raw}}
	for _, c := range chain {
		devTLS.Certificate = append(devTLS.Certificate, c.Raw)
	}
	status, fetched := s.callWith(s.client(devTLS), "", "GET", "/maf/v1/fetchCredentials/"+r2.Key.KeID+"/22", "", nil)
	if status != 200 || fetched["credential"] != base64.StdEncoding.EncodeToString(r2.Key.Value) {
		t.Fatalf("the Target fetches the OBS's key: %d %v", status, fetched)
	}

	// 2. The SP is unreachable: the run fails, the item stays in the
	// outbox, nothing is recorded and nothing is handed to the line.
	down := l.writeConfig("obs-down.yaml", "https://"+freePort(t))
	b3 := l.bundle("line-3", l.obfID)
	job3, _ := obsCertJob(t, b3)
	l.drop("line-3.json", job3)
	out, err = l.obs(down, "run", "--once")
	if err == nil || !strings.Contains(out, "pending 1,") {
		t.Fatalf("run --once with the SP down: %v\n%s", err, out)
	}
	pending := l.files(obs.DirOutbox)
	if len(pending) != 1 || len(l.files(obs.DirIn)) != 0 {
		t.Fatalf("outbox %v, in/ %v with the SP down", pending, l.files(obs.DirIn))
	}
	saved := readFile(t, filepath.Join(l.spool, obs.DirOutbox, pending[0]))
	if _, err := os.Stat(filepath.Join(l.spool, obs.DirOut, b3["assignedId"].(string)+".json")); !os.IsNotExist(err) {
		t.Fatalf("out/ holds a result the SP never recorded: %v", err)
	}
	if state, creds := l.device("line-3"); state == "enrolled" || len(creds) != 0 {
		t.Fatalf("line-3 recorded while the SP was unreachable: %s %v", state, creds)
	}
	// Back up: the next run sends it.
	out, err = l.obs(l.config, "run", "--once")
	if err != nil || !strings.Contains(out, "recorded 1,") || len(l.files(obs.DirOutbox)) != 0 {
		t.Fatalf("run --once after the SP came back: %v\n%s", err, out)
	}
	r3 := l.result(b3["assignedId"].(string))
	l.enrolledWith("line-3", r3.CredentialID)
	// A resend (as after an answer lost in a crash) is a replay, not a
	// second credential.
	if err := os.WriteFile(filepath.Join(l.spool, obs.DirOutbox, pending[0]), []byte(saved), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = l.obs(l.config, "run", "--once")
	if err != nil || !strings.Contains(out, "replayed 1,") || len(l.files(obs.DirOutbox)) != 0 {
		t.Fatalf("resent item: %v\n%s", err, out)
	}
	l.enrolledWith("line-3", r3.CredentialID)
	if again := l.result(b3["assignedId"].(string)); again.Certificate != r3.Certificate {
		t.Fatal("the replay's answer rewrote the device's result with another certificate")
	}

	// 3. A token issued to another OBF ends in refused/ with the SP's
	// code; the good job in the same batch is recorded.
	_, toolCSR := obsPEMKey(t)
	status, tool := s.call(s.stakeholder("admin2", "sp-admin"), "POST", "/api/v1/obfs", "application/json", mustJSON(map[string]any{
		"name": "tool", "kind": "obd", "trusted": true, "owner": "alice", "clientCsr": toolCSR}))
	if status != 201 {
		t.Fatalf("register another OBF: %d %v", status, tool)
	}
	b4, b5 := l.bundle("line-4", tool["obfId"].(string)), l.bundle("line-5", l.obfID)
	job4, _ := obsCertJob(t, b4)
	job5, _ := obsCertJob(t, b5)
	l.drop("line-4.json", job4)
	l.drop("line-5.json", job5)
	out, err = l.obs(l.config, "run", "--once")
	if err == nil || !strings.Contains(out, "recorded 1,") || !strings.Contains(out, "refused 1,") {
		t.Fatalf("run --once with another OBF's token: %v\n%s", err, out)
	}
	l.enrolledWith("line-5", l.result(b5["assignedId"].(string)).CredentialID)
	// refused/ holds the refusal; out/ never held a result for it.
	refused := l.files(obs.DirRefused)
	if len(refused) != 1 || len(l.files(obs.DirOutbox)) != 0 {
		t.Fatalf("refused/ %v, outbox %v", refused, l.files(obs.DirOutbox))
	}
	if _, err := os.Stat(filepath.Join(l.spool, obs.DirOut, b4["assignedId"].(string)+".json")); !os.IsNotExist(err) {
		t.Fatalf("out/ holds a certificate for a refused item: %v", err)
	}
	var ref obs.Refusal
	if err := json.Unmarshal([]byte(readFile(t, filepath.Join(l.spool, obs.DirRefused, refused[0]))), &ref); err != nil {
		t.Fatal(err)
	}
	if ref.Source != "sp" || ref.Code != "token_mismatch" || ref.Item == nil || ref.Item.AssignedID != b4["assignedId"] {
		t.Fatalf("refusal: %+v", ref)
	}
	if state, creds := l.device("line-4"); state == "enrolled" || len(creds) != 0 {
		t.Fatalf("line-4 recorded with another OBF's token: %s %v", state, creds)
	}

	// 4. Without --once: it polls in/ until SIGTERM, then exits cleanly.
	cmd := exec.Command(bin, "obs", "run", "--config", l.config)
	cmd.Env = cleanEnv()
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	defer func() {
		if !stopped {
			cmd.Process.Kill()
			<-exited
		}
	}()
	b6 := l.bundle("line-6", l.obfID)
	job6, _ := obsCertJob(t, b6)
	l.drop("line-6.json", job6)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if state, _ := l.device("line-6"); state == "enrolled" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("obs run did not forward line-6:\n%s", logs.String())
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Fatalf("obs run after SIGTERM: %v\n%s", err, logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("obs run did not stop on SIGTERM:\n%s", logs.String())
	}
	l.enrolledWith("line-6", l.result(b6["assignedId"].(string)).CredentialID)
	if len(l.files(obs.DirOutbox))+len(l.files(obs.DirIn)) != 0 {
		t.Fatalf("outbox %v, in/ %v after obs run", l.files(obs.DirOutbox), l.files(obs.DirIn))
	}
}

// TestOBSTransientRefusal: the real server answers an item it cannot
// record now (its registry is locked by another writer) with a transient
// code, and the OBS keeps it in the outbox, hands nothing to the line, and
// records it on a later run; nothing lands in refused/.
func TestOBSTransientRefusal(t *testing.T) {
	l := newOBSLine(t, "CREDFACTORY_STORE_TX_TIMEOUT=1s", "CREDFACTORY_STORE_MAX_RETRIES=1")
	b := l.bundle("line-1", l.obfID)
	job, _ := obsCertJob(t, b)
	l.drop("line-1.json", job)

	// Another writer holds the registry's write lock (SQLite, WAL: reads go
	// on, the redemption's commit cannot).
	db, err := sql.Open("sqlite3", filepath.Join(l.sp.dir, "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	conn, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(context.Background(), "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	locked := true
	defer func() {
		if locked {
			_, _ = conn.ExecContext(context.Background(), "ROLLBACK")
		}
		conn.Close()
	}()
	out, err := l.obs(l.config, "run", "--once")
	if err == nil || !strings.Contains(out, "pending 1,") || !strings.Contains(out, "refused 0,") || !strings.Contains(out, "not recorded yet; kept in the outbox") {
		t.Fatalf("run --once with the registry locked: %v\n%s", err, out)
	}
	// The SP's per-item code (a commit that timed out: internal, or
	// registry_unavailable when SQLite says busy first), transient by the
	// wire contract.
	m := regexp.MustCompile(`kept in the outbox.* code=([a-z_]+)`).FindStringSubmatch(out)
	if m == nil || !forwardapi.Transient(m[1]) {
		t.Fatalf("the OBS kept the item for another reason than the SP's transient refusal (%v):\n%s", m, out)
	}
	if len(l.files(obs.DirOutbox)) != 1 || len(l.files(obs.DirRefused)) != 0 || len(l.files(obs.DirOut)) != 0 {
		t.Fatalf("outbox %v, refused/ %v, out/ %v after a transient refusal", l.files(obs.DirOutbox), l.files(obs.DirRefused), l.files(obs.DirOut))
	}
	if _, err := conn.ExecContext(context.Background(), "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	locked = false
	out, err = l.obs(l.config, "run", "--once")
	if err != nil || !strings.Contains(out, "recorded 1,") || len(l.files(obs.DirOutbox)) != 0 {
		t.Fatalf("run --once after the lock: %v\n%s", err, out)
	}
	l.enrolledWith("line-1", l.result(b["assignedId"].(string)).CredentialID)
}

// TestOBSConfigExample: the example in `obs --help` is a valid config.
func TestOBSConfigExample(t *testing.T) {
	_, example, ok := strings.Cut(obsConfigHelp, "file's directory):\n")
	if !ok {
		t.Fatal("no example in the help")
	}
	path := filepath.Join(t.TempDir(), "obs.yaml")
	if err := os.WriteFile(path, []byte(example), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := obs.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.CheckRun(); err != nil || cfg.BatchSize != 100 || cfg.KeyLifetime != 0 {
		t.Fatalf("example: %v %+v", err, cfg)
	}
}
