package hatest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/credfactory/credfactory/bench"
	"github.com/credfactory/credfactory/store"
	"github.com/jackc/pgx/v5"
)

// load is the fleet's load in the fault tests: 64 concurrent clients
// through HAProxy, each enrolment retried with its own token and request
// while the server asks for it (503/429 after Retry-After) or the
// connection drops, as devices do during a failover.
func load(paths ...string) bench.Config {
	return bench.Config{Paths: paths, Concurrency: []int{64}, BatchSizes: []int{25}, Duration: 3 * time.Second,
		Tokens: 600, Retry: 90 * time.Second}
}

// runUnderFault runs cfg through HAProxy with fault called 700 ms into the
// first step's timed part, then holds the registry to what the clients
// received (bench.Runner.Verify) and checks every enrolment succeeded in
// the end.
func runUnderFault(t *testing.T, c *cluster, name string, cfg bench.Config, fault func()) []bench.Result {
	t.Helper()
	var out bytes.Buffer
	runner := bench.NewRunner(c.target(t, name, c.env["HA_HTTPS_URL"]), &out)
	fired := false
	cfg.OnStep = func(string) {
		if !fired {
			fired = true
			time.AfterFunc(700*time.Millisecond, fault)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	results, err := runner.Run(ctx, cfg)
	if err == nil {
		err = runner.Verify(ctx, results)
	}
	t.Logf("bench:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range results {
		if r.Enrolments == 0 || r.ErrorCount() > 0 {
			t.Errorf("%s: %d enrolments, errors after retries %v", r.Path, r.Enrolments, r.Errors)
		}
		if r.NoRetryAfter > 0 {
			t.Errorf("%s: %d answers 503 without Retry-After", r.Path, r.NoRetryAfter)
		}
	}
	return results
}

// TestLeaderKilled: kill -9 the PostgreSQL leader (Patroni and every
// postgres process) mid-run. Patroni promotes the synchronous standby,
// HAProxy moves the registry port to it, the replicas' pools reconnect
// without a restart; clients see 503 registry_unavailable with Retry-After
// during the gap, then succeed, and nothing acknowledged is lost.
func TestLeaderKilled(t *testing.T) {
	c := requireCluster(t)
	c.waitWhole(t)
	old := c.leader(t)
	ctx, stop := context.WithCancel(context.Background())
	most := c.watchPrimaries(ctx)
	// The killed member rejoins (pg_rewind if it must) as a standby, also
	// when the test fails, so the next test has a whole cluster.
	t.Cleanup(func() {
		c.run(t, "start-member", c.dir, old)
		c.waitWhole(t)
	})
	results := runUnderFault(t, c, "ha-leader-kill", load(bench.PathEST, bench.PathPSK, bench.PathForward), func() { c.killMember(t, old) })
	stop()
	est := results[0]
	if est.Retried["registry_unavailable"] == 0 {
		t.Fatalf("no client saw 503 registry_unavailable while the leader was down (retried: %v): the kill missed the run", est.Retried)
	}
	gap := est.LastRetried.Sub(est.FirstRetried)
	t.Logf("failover gap as clients saw it: %.1fs (first to last retried failure); retried %v", gap.Seconds(), est.Retried)
	if n := most(); n > 1 {
		t.Errorf("%d members answered /primary 200 at once", n)
	}
	if now := c.leader(t); now == old {
		t.Errorf("the leader is still %s", old)
	}
}

// TestReplicaKilled: kill -9 one credfactory replica mid-run. HAProxy
// takes it out of rotation; clients whose connection it held retry with
// the same token and request and get their credential exactly once
// (Verify: one active credential per enrolled device, every one received).
func TestReplicaKilled(t *testing.T) {
	c := requireCluster(t)
	c.waitWhole(t)
	t.Cleanup(func() {
		c.run(t, "start-replica", c.dir, "2")
		c.waitWhole(t)
	})
	results := runUnderFault(t, c, "ha-replica-kill", load(bench.PathEST, bench.PathPSK, bench.PathForward), func() { c.killReplica(t, 2) })
	t.Logf("retried: est %v, psk %v, forward %v", results[0].Retried, results[1].Retried, results[2].Retried)
	if results[0].Retried["transport"] == 0 {
		t.Errorf("no client lost its connection to the killed replica (retried: %v)", results[0].Retried)
	}
	if st := c.haproxyStates(t)["https"]["r2"]; !strings.HasPrefix(st, "DOWN") {
		t.Errorf("HAProxy still has the killed replica as %q", st)
	}
}

// TestSplitBrainOneWriter: freeze the leader's Patroni (SIGSTOP), the
// classic way to get two primaries: its PostgreSQL keeps running as
// primary while a standby is promoted. HAProxy routes to one member only
// (the frozen one answers no health check), no two members answer /primary
// 200, and the old primary cannot acknowledge a write: with synchronous
// replication its commits wait for a standby that no longer follows it.
// Resumed, the old leader demotes itself.
func TestSplitBrainOneWriter(t *testing.T) {
	c := requireCluster(t)
	c.waitWhole(t)
	old := c.leader(t)
	sqlExec(t, c.env["HA_STORE_URL"], `CREATE TABLE IF NOT EXISTS ha_probe (id BIGSERIAL PRIMARY KEY, at TIMESTAMPTZ NOT NULL)`)
	defer sqlExec(t, c.env["HA_STORE_URL"], `DROP TABLE IF EXISTS ha_probe`)
	pid := c.patroniPID(t, old)
	ctx, stop := context.WithCancel(context.Background())
	most := c.watchPrimaries(ctx)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// runuser stops itself when its child stops (as su does): resume the
	// whole process group.
	group := pidFile(filepath.Join(c.dir, "run", "patroni-"+old+".pid"))
	resume := func() {
		if err := errors.Join(syscall.Kill(-group, syscall.SIGCONT), syscall.Kill(pid, syscall.SIGCONT)); err != nil {
			t.Errorf("resume %s's Patroni: %v", old, err)
		}
	}
	resumed := false
	defer func() {
		if !resumed {
			resume()
		}
	}()
	var now string
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if p := c.primaries(); len(p) == 1 && p[0] != old {
			now = p[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new leader within 60s of freezing %s's Patroni", old)
		}
	}
	// The old postmaster still runs as primary: a write straight to it
	// (past HAProxy) must not be acknowledged.
	oldPort := c.env["HA_"+strings.ToUpper(old)+"_PG"]
	url := strings.Replace(c.env["HA_STORE_URL"], ":"+c.env["HA_PG_PORT"]+"/", ":"+oldPort+"/", 1)
	if _, err := writeOnce(url, 3*time.Second); err == nil {
		t.Errorf("the frozen old primary %s acknowledged a write", old)
	} else {
		t.Logf("write to the old primary: %v", err)
	}
	// Through HAProxy the registry takes writes on the new leader; that
	// acknowledged write must survive the old leader's return.
	acked, err := writeOnce(c.env["HA_STORE_URL"], 10*time.Second)
	if err != nil {
		t.Errorf("write through HAProxy to the new leader %s: %v", now, err)
	}
	if st := c.haproxyStates(t)["pg"]; st[old] == "UP" || st[now] != "UP" {
		t.Errorf("HAProxy routes the registry to %v, want %s only", st, now)
	}
	resume()
	resumed = true
	c.waitWhole(t)
	stop()
	if n := most(); n > 1 {
		t.Errorf("%d members answered /primary 200 at once", n)
	}
	if l := c.leader(t); l != now {
		t.Errorf("leader %s after the old one resumed, want %s", l, now)
	}
	if acked != 0 {
		if n := sqlCount(t, c.env["HA_STORE_URL"], `SELECT count(*) FROM ha_probe WHERE id = $1`, acked); n != 1 {
			t.Errorf("the write the new leader acknowledged (row %d) is gone after the old leader resumed", acked)
		}
	}
}

// TestNewerSchemaRefused: a replica started against a registry that a newer
// credfactory migrated refuses to serve, and says why.
func TestNewerSchemaRefused(t *testing.T) {
	c := requireCluster(t)
	c.waitWhole(t)
	version := store.SchemaVersion()
	sqlExec(t, c.env["HA_STORE_URL"], fmt.Sprintf(
		`INSERT INTO schema_migrations (version, name, applied_at) VALUES (%d, 'from a newer credfactory', now())`, version+1))
	defer sqlExec(t, c.env["HA_STORE_URL"], fmt.Sprintf(`DELETE FROM schema_migrations WHERE version = %d`, version+1))
	out, err := c.serveOnce(t, c.replicaCopy(t))
	if err == nil {
		t.Fatalf("serve started against a newer schema:\n%s", out)
	}
	want := fmt.Sprintf("registry schema is version %d, newer than this binary's %d", version+1, version)
	if !strings.Contains(out, want) {
		t.Errorf("serve's error does not say %q:\n%s", want, out)
	}
}

// TestReplicaMissingKey: a replica whose token lacks a key the others have
// (here the KDF master key) never becomes ready, and says which key: at
// start it refuses to serve; when the key goes from under a running
// replica, its /readyz turns 503 and its log names the key.
func TestReplicaMissingKey(t *testing.T) {
	c := requireCluster(t)
	t.Run("at start", func(t *testing.T) {
		dir := c.replicaCopy(t)
		c.deleteKey(t, dir, "credfactory-kdf-master")
		out, err := c.serveOnce(t, dir)
		if err == nil {
			t.Fatalf("serve started without the KDF master key:\n%s", out)
		}
		t.Logf("serve without the key: %s", strings.TrimSpace(out))
		if !strings.Contains(out, "credfactory-kdf-master") {
			t.Errorf("serve's error does not name the missing key:\n%s", out)
		}
	})
	t.Run("while serving", func(t *testing.T) {
		dir := c.replicaCopy(t)
		ops := freePort(t)
		logPath := filepath.Join(dir, "serve.log")
		logf, err := os.Create(logPath)
		if err != nil {
			t.Fatal(err)
		}
		defer logf.Close()
		cmd := exec.Command(c.bin, "serve", "--data-dir", dir, "--listen", "127.0.0.1:0")
		cmd.Env = append(c.cfEnv(), "CREDFACTORY_LOG_AUDIT_FILE="+dir+"/audit.log",
			"CREDFACTORY_SERVER_OPS_LISTEN=127.0.0.1:"+ops)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
		readyz := "http://127.0.0.1:" + ops + "/readyz"
		waitStatus(t, readyz, 200, 30*time.Second)
		c.deleteKey(t, dir, "credfactory-kdf-master")
		body := waitStatus(t, readyz, 503, 10*time.Second)
		if !strings.Contains(body, `"keys":"unavailable"`) || strings.Contains(body, "kdf") {
			t.Errorf("/readyz answered %s, want the keys check unavailable and no key names", body)
		}
		raw, _ := os.ReadFile(logPath)
		if !strings.Contains(string(raw), "credfactory-kdf-master") {
			t.Errorf("the log does not name the missing key:\n%s", raw)
		}
	})
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// waitStatus polls url until it answers status and returns the body.
func waitStatus(t *testing.T, url string, status int, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		code, body, err := get(url)
		if err == nil && code == status {
			return string(body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer %d within %v (last %d %s %v)", url, status, within, code, body, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// serveOnce runs `credfactory serve` on dir against the cluster's registry
// and returns its output once it exits; a serve still running after 30 s
// (or ready) counts as started.
func (c *cluster) serveOnce(t *testing.T, dir string) (string, error) {
	t.Helper()
	cmd := exec.Command(c.bin, "serve", "--data-dir", dir, "--listen", "127.0.0.1:0")
	cmd.Env = append(c.cfEnv(), "CREDFACTORY_LOG_AUDIT_FILE="+dir+"/audit.log")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			return out.String(), fmt.Errorf("exited 0")
		}
		return out.String(), err
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		return out.String(), nil
	}
}

func get(url string) (int, []byte, error) {
	resp, err := probe.Get(url)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

var _ = http.StatusOK

func sqlExec(t *testing.T, url, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// writeOnce commits one row into ha_probe through url within timeout and
// returns its id.
func writeOnce(url string, timeout time.Duration) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	var id int64
	err = conn.QueryRow(ctx, `INSERT INTO ha_probe (at) VALUES (now()) RETURNING id`).Scan(&id)
	return id, err
}

func sqlCount(t *testing.T, url, sql string, args ...any) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// replicaCopy copies replica 1's data directory (its SoftHSM token
// included) to a new one.
func (c *cluster) replicaCopy(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "replica")
	if out, err := exec.Command("cp", "-a", filepath.Join(c.dir, "r1"), dir).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	conf := filepath.Join(dir, "hsm", "softhsm2.conf")
	raw, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	raw = []byte(strings.ReplaceAll(string(raw), filepath.Join(c.dir, "r1"), dir))
	if err := os.WriteFile(conf, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// deleteKey deletes the secret key labelled key from the token of the data
// directory dir.
func (c *cluster) deleteKey(t *testing.T, dir, key string) {
	t.Helper()
	conf := filepath.Join(dir, "hsm", "softhsm2.conf")
	pin, err := os.ReadFile(filepath.Join(dir, "hsm", "hsm-pin"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("pkcs11-tool", "--module", "/usr/lib/softhsm/libsofthsm2.so", "--token-label", "credfactory",
		"--login", "--pin", "env:HA_PIN", "--delete-object", "--type", "secrkey", "--label", key)
	cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+conf, "HA_PIN="+strings.TrimSpace(string(pin)))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pkcs11-tool delete %s: %v\n%s", key, err, out)
	}
}
