// Package storetest gives tests real databases: a schema of their own on the
// PostgreSQL server make test starts, or a private PostgreSQL cluster for a
// test that stops and restarts its server. It is imported by tests only.
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// URLEnv names the variable make test sets to its PostgreSQL server's URL.
const URLEnv = "CREDFACTORY_TEST_POSTGRES_URL"

// PostgresURL returns a URL to a fresh, empty schema on the shared test
// server, dropped when t ends. Without the server it skips t, except under
// CI, where a missing server is a failure: a suite that silently skipped its
// PostgreSQL half would prove nothing.
func PostgresURL(t testing.TB) string {
	t.Helper()
	base := os.Getenv(URLEnv)
	if base == "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is unset under CI: run the tests through make test", URLEnv)
		}
		t.Skipf("%s unset: make test starts a PostgreSQL server for these tests", URLEnv)
	}
	return schemaURL(t, base)
}

func schemaURL(t testing.TB, base string) string {
	t.Helper()
	b := make([]byte, 6)
	rand.Read(b)
	schema := "t_" + hex.EncodeToString(b)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("connect to the test PostgreSQL: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c, err := pgx.Connect(ctx, base); err == nil {
			_, _ = c.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE")
			c.Close(ctx)
		}
	})
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
	}
	return base + sep + "search_path=" + schema
}

// Each runs f as subtests "sqlite" (a fresh file) and "postgres" (a fresh
// schema on the shared server): the one suite, run on both backends.
func Each(t *testing.T, f func(t *testing.T, url string)) {
	t.Run("sqlite", func(t *testing.T) { f(t, "sqlite://"+filepath.Join(t.TempDir(), "registry.db")) })
	t.Run("postgres", func(t *testing.T) { f(t, PostgresURL(t)) })
}

// Cluster is a PostgreSQL server of a test's own, for tests that stop it.
type Cluster struct {
	t      testing.TB
	dir    string
	script string
	URL    string
}

// PrivateCluster starts a throwaway PostgreSQL server for t alone (a few
// seconds), stopped and removed when t ends.
func PrivateCluster(t testing.TB) *Cluster {
	t.Helper()
	if os.Getenv(URLEnv) == "" && os.Getenv("CI") == "" {
		t.Skipf("%s unset: make test installs PostgreSQL for these tests", URLEnv)
	}
	_, file, _, _ := runtime.Caller(0)
	// Not t.TempDir: its parent is private to root, and the server runs as
	// the postgres user, which must reach the directory.
	dir, err := os.MkdirTemp("", "credfactory-pg-")
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{t: t, dir: dir, script: filepath.Join(filepath.Dir(file), "..", "..", "deploy", "dev", "pg-test.sh")}
	cmd := exec.Command("bash", c.script, "start", c.dir)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		os.RemoveAll(dir)
		t.Fatalf("start a private PostgreSQL: %v\n%s", err, stderr.String())
	}
	c.URL = strings.TrimSpace(string(out))
	// make test's harness reaps clusters whose owner died (a test killed by
	// -timeout never runs its cleanup).
	_ = os.WriteFile(filepath.Join(dir, "owner-pid"), []byte(strconv.Itoa(os.Getpid())), 0o644)
	t.Cleanup(func() { _ = exec.Command("bash", c.script, "stop", c.dir).Run() })
	return c
}

// Run runs a pg-test.sh subcommand on the cluster: restart, down or up.
func (c *Cluster) Run(cmd string) {
	c.t.Helper()
	if out, err := exec.Command("bash", c.script, cmd, c.dir).CombinedOutput(); err != nil {
		c.t.Fatalf("pg-test.sh %s: %v\n%s", cmd, err, out)
	}
}
