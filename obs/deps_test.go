package obs

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoServerDependencies: the factory-line program carries none of the
// server (registry, CA, HTTP server, their configuration): only the wire
// contract, the HTTP client and its own HSM access. Package kdf (the TS-0003
// §10.3 key hierarchy: the standard library and x/text's NFKC) is allowed: a device derives
// its exporter-mode keys with the same code the MEF does.
func TestNoServerDependencies(t *testing.T) {
	for _, pkg := range []string{".", "../client"} {
		out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", pkg).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", pkg, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, server := range []string{"/credfactory/mef", "/credfactory/store", "/credfactory/maf", "/credfactory/ca",
				"/credfactory/portal", "/credfactory/server", "/credfactory/castatus", "/credfactory/config",
				"valyala/fasthttp", "zmap/zlint", "jackc/pgx", "modernc.org/sqlite"} {
				if strings.HasSuffix(dep, server) || strings.Contains(dep, server+"/") {
					t.Errorf("%s depends on %s", pkg, dep)
				}
			}
		}
	}
}
