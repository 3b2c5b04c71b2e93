package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestBinaryLinksNoTestHelpers: the packages made for tests (a SoftHSM
// token outage, a software CA, a throwaway PostgreSQL schema) are never
// linked into the binary a deployment runs.
func TestBinaryLinksNoTestHelpers(t *testing.T) {
	// go test puts its own toolchain's bin directory first on PATH.
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 50 {
		t.Fatalf("go list -deps named %d packages: %v", len(deps), deps)
	}
	for _, forbidden := range []string{
		"github.com/credfactory/credfactory/hsm/softhsm/softhsmtest",
		"github.com/credfactory/credfactory/ca/catest",
		"github.com/credfactory/credfactory/store/storetest",
		"testing",
	} {
		for _, d := range deps {
			if d == forbidden {
				t.Errorf("the binary links %s, a package for tests", d)
			}
		}
	}
}
