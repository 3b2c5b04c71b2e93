package hatest

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/credfactory/credfactory/bench"
	"github.com/credfactory/credfactory/ca"
	"github.com/credfactory/credfactory/client"
)

// The fleet is started once (about 10 s) and shared by the tests, which run
// one after another and each leave it whole again; TestMain stops it.
var (
	fleetOnce sync.Once
	fleet     *cluster
	fleetErr  error
	binDir    string
)

func TestMain(m *testing.M) {
	os.Exit(func() int {
		code := m.Run()
		if fleet != nil {
			if err := fleet.down(); err != nil {
				fmt.Fprintln(os.Stderr, err)
				code = 1
			}
		}
		if binDir != "" {
			os.RemoveAll(binDir)
		}
		return code
	}())
}

// Packages the cluster needs (deploy/dev/cluster.sh install puts them there).
var needed = []string{"/usr/bin/patroni", "/usr/bin/etcd", "/usr/sbin/haproxy", "/usr/lib/postgresql/15/bin/postgres", "/usr/bin/curl"}

// requireCluster returns the running fleet, starting it on first use. It
// skips when the packages are missing, except under CI, where it fails.
func requireCluster(t *testing.T) *cluster {
	t.Helper()
	var missing []string
	for _, p := range needed {
		if _, err := os.Stat(p); err != nil {
			missing = append(missing, p)
		}
	}
	if os.Geteuid() != 0 {
		missing = append(missing, "root (the cluster runs PostgreSQL as the postgres user)")
	}
	if len(missing) > 0 {
		if os.Getenv("CI") != "" {
			t.Fatalf("the high-availability tests need %v under CI (deploy/dev/cluster.sh install)", missing)
		}
		t.Skipf("missing %v: deploy/dev/cluster.sh install puts them there", missing)
	}
	fleetOnce.Do(func() { fleet, fleetErr = startCluster() })
	if fleetErr != nil {
		t.Fatal(fleetErr)
	}
	return fleet
}

type cluster struct {
	script string
	dir    string
	env    map[string]string
	anchor []*x509.Certificate
	bin    string
}

func startCluster() (*cluster, error) {
	var err error
	if binDir, err = os.MkdirTemp("", "credfactory-ha-bin-"); err != nil {
		return nil, err
	}
	bin := filepath.Join(binDir, "credfactory")
	if out, err := exec.Command("go", "build", "-buildvcs=false", "-o", bin, "../cmd/credfactory").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build: %v\n%s", err, out)
	}
	script, err := filepath.Abs("../deploy/dev/cluster.sh")
	if err != nil {
		return nil, err
	}
	// Under /tmp whatever TMPDIR says: the postgres user must reach it and
	// PostgreSQL's unix socket paths must stay short.
	dir, err := os.MkdirTemp("/tmp", "cf-ha.")
	if err != nil {
		return nil, err
	}
	c := &cluster{script: script, dir: dir, bin: bin}
	cmd := exec.Command("bash", script, "up", dir)
	cmd.Env = append(os.Environ(), "REPLICAS=3", "CREDFACTORY_BIN="+bin)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("cluster.sh up: %v\n%s", err, out)
	}
	if c.env, err = readEnv(filepath.Join(dir, "cluster.env")); err != nil {
		return nil, errors.Join(err, c.down())
	}
	raw, err := os.ReadFile(filepath.Join(dir, "r1", "trust-anchor.pem"))
	if err == nil {
		c.anchor, err = ca.ParseCertsPEM(raw)
	}
	if err != nil {
		return nil, errors.Join(err, c.down())
	}
	return c, nil
}

func readEnv(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			env[k] = strings.Trim(v, `"`)
		}
	}
	return env, sc.Err()
}

func (c *cluster) down() error {
	if out, err := exec.Command("bash", c.script, "down", c.dir).CombinedOutput(); err != nil {
		return fmt.Errorf("cluster.sh down: %v\n%s", err, out)
	}
	return nil
}

func (c *cluster) run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("bash", append([]string{c.script}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("cluster.sh %v: %v\n%s", args, err, out)
	}
}

func (c *cluster) members() []string { return strings.Fields(c.env["HA_MEMBERS"]) }

func (c *cluster) rest(m string) string {
	return "http://127.0.0.1:" + c.env["HA_"+strings.ToUpper(m)+"_REST"]
}

func (c *cluster) replicaURL(i int) string {
	return "https://localhost:" + c.env[fmt.Sprintf("HA_REPLICA%d_PORT", i)]
}

func (c *cluster) replicas() int { n, _ := strconv.Atoi(c.env["HA_REPLICAS"]); return n }

var probe = &http.Client{Timeout: 2 * time.Second}

func status(url string) int {
	resp, err := probe.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// primaries: the members whose Patroni answers /primary 200, the check
// HAProxy routes the registry by.
func (c *cluster) primaries() []string {
	var out []string
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, m := range c.members() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if status(c.rest(m)+"/primary") == 200 {
				mu.Lock()
				out = append(out, m)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out
}

func (c *cluster) leader(t *testing.T) string {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if p := c.primaries(); len(p) == 1 {
			return p[0]
		}
	}
	t.Fatal("no single Patroni leader within 60s")
	return ""
}

// member is one entry of Patroni's /cluster.
type member struct {
	Name  string `json:"name"`
	Role  string `json:"role"`
	State string `json:"state"`
	Lag   any    `json:"lag"`
}

// waitWhole waits until every member runs again, one of them as the
// synchronous standby, and HAProxy routes to one leader and every replica.
func (c *cluster) waitWhole(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(120 * time.Second)
	for ; ; time.Sleep(250 * time.Millisecond) {
		var cl struct{ Members []member }
		running, sync := 0, 0
		for _, m := range c.members() {
			resp, err := probe.Get(c.rest(m) + "/cluster")
			if err != nil {
				continue
			}
			err = json.NewDecoder(resp.Body).Decode(&cl)
			resp.Body.Close()
			if err == nil {
				break
			}
		}
		for _, m := range cl.Members {
			if m.State == "running" || m.State == "streaming" {
				running++
			}
			if m.Role == "sync_standby" {
				sync++
			}
		}
		up := c.haproxyUp(t)
		ready := len(c.primaries()) == 1 && up["pg"] == 1 && up["https"] == c.replicas()
		if running == len(c.members()) && sync == 1 && ready {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cluster is not whole after 120s: members %+v, HAProxy servers up %v", cl.Members, up)
		}
	}
}

func pidFile(path string) int {
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(raw), "\n", 2)[0]))
	return pid
}

// killMember kills -9 a Patroni member as a machine crash would: Patroni
// (and its runuser parent), the postmaster and every backend.
func (c *cluster) killMember(t *testing.T, m string) {
	t.Helper()
	// ESRCH (already gone) is fine for each of these: the crash is the point.
	if pid := pidFile(filepath.Join(c.dir, "run", "patroni-"+m+".pid")); pid > 0 {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
	pm := pidFile(filepath.Join(c.dir, "pg", m, "postmaster.pid"))
	if pm <= 0 {
		t.Fatalf("no postmaster pid for %s", m)
	}
	if pgid, err := syscall.Getpgid(pm); err == nil {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
	if err := syscall.Kill(pm, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("kill postmaster %d of %s: %v", pm, m, err)
	}
}

// patroniPID is the Patroni process of member m (runuser's child).
func (c *cluster) patroniPID(t *testing.T, m string) int {
	t.Helper()
	parent := pidFile(filepath.Join(c.dir, "run", "patroni-"+m+".pid"))
	procs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range procs {
		raw, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		s := string(raw)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(parent) {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			return pid
		}
	}
	t.Fatalf("no Patroni process under runuser %d for %s", parent, m)
	return 0
}

func (c *cluster) killReplica(t *testing.T, i int) {
	t.Helper()
	pid := pidFile(filepath.Join(c.dir, "run", fmt.Sprintf("replica%d.pid", i)))
	if pid <= 0 {
		t.Fatalf("no pid for replica %d", i)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill replica %d (pid %d): %v", i, pid, err)
	}
}

// haproxy sends one command to HAProxy's admin socket.
func (c *cluster) haproxy(t *testing.T, cmd string) string {
	t.Helper()
	conn, err := net.DialTimeout("unix", c.env["HA_HAPROXY_SOCKET"], 2*time.Second)
	if err != nil {
		t.Fatalf("HAProxy socket: %v", err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(conn, cmd)
	var b strings.Builder
	sc := bufio.NewScanner(conn)
	for sc.Scan() {
		b.WriteString(sc.Text() + "\n")
	}
	return b.String()
}

// haproxyStates: backend -> server -> status (UP, DOWN, MAINT, ...).
func (c *cluster) haproxyStates(t *testing.T) map[string]map[string]string {
	t.Helper()
	out := map[string]map[string]string{}
	var idx map[string]int
	for _, line := range strings.Split(c.haproxy(t, "show stat"), "\n") {
		f := strings.Split(strings.TrimPrefix(line, "# "), ",")
		if strings.HasPrefix(line, "# ") {
			idx = map[string]int{}
			for i, k := range f {
				idx[k] = i
			}
			continue
		}
		if idx == nil || len(f) <= idx["status"] || f[1] == "FRONTEND" || f[1] == "BACKEND" {
			continue
		}
		if out[f[0]] == nil {
			out[f[0]] = map[string]string{}
		}
		out[f[0]][f[1]] = f[idx["status"]]
	}
	return out
}

func (c *cluster) haproxyUp(t *testing.T) map[string]int {
	up := map[string]int{}
	for be, servers := range c.haproxyStates(t) {
		for _, s := range servers {
			if s == "UP" {
				up[be]++
			}
		}
	}
	return up
}

// account makes a manufacturer of its own for one test, so that the
// bench's verification lists only that test's devices.
func (c *cluster) account(t *testing.T, name string) string {
	t.Helper()
	env := append(c.cfEnv(), "CREDFACTORY_PASSWORD=ha-password-not-secret")
	runCF := func(args ...string) string {
		cmd := exec.Command(c.bin, append(args, "--data-dir", filepath.Join(c.dir, "r1"))...)
		cmd.Env = env
		out, err := cmd.Output()
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			t.Fatalf("credfactory %v: %v\n%s", args, err, stderr)
		}
		return strings.TrimSpace(string(out))
	}
	runCF("admin", "create-stakeholder", "--name", name, "--role", "manufacturer")
	return runCF("admin", "create-api-key", "--stakeholder", name)
}

func (c *cluster) target(t *testing.T, maker, base string) bench.Target {
	t.Helper()
	admin, err := os.ReadFile(filepath.Join(c.dir, "admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	return bench.Target{Base: base, Anchor: c.anchor, ManufacturerKey: c.account(t, maker),
		AdminKey: strings.TrimSpace(string(admin)), OwnerName: maker, SPDomain: spDomain}
}

// spDomain is the fleet's portal.sp_domain (deploy/dev/cluster.sh), which
// init constrained its issuing CA to.
const spDomain = "ha.sp.example"

// cfEnv is the environment a credfactory command run beside the fleet
// needs: its registry and SP domain.
func (c *cluster) cfEnv() []string {
	return append(os.Environ(), "CREDFACTORY_STORE_URL="+c.env["HA_STORE_URL"], "CREDFACTORY_PORTAL_SP_DOMAIN="+spDomain)
}

func (c *cluster) conn(base string) *client.Conn { return client.NewConn(base, c.anchor, nil) }

// watchPrimaries samples /primary on every member every 100 ms until ctx
// ends and returns the largest number of members that answered 200 at once.
func (c *cluster) watchPrimaries(ctx context.Context) func() int {
	done := make(chan int)
	go func() {
		most := 0
		for ctx.Err() == nil {
			most = max(most, len(c.primaries()))
			time.Sleep(100 * time.Millisecond)
		}
		done <- most
	}()
	return func() int { return <-done }
}
