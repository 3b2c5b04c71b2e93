// Package apidoc checks, in tests, that api/openapi.yaml documents every
// route a component registers: the contract and the code cannot drift.
package apidoc

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/credfactory/credfactory/httpapi"
	"go.yaml.in/yaml/v3"
)

// Check fails t for each route missing from api/openapi.yaml.
func Check(t testing.TB, routes []httpapi.Route) {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	raw, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "api", "openapi.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Paths map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("api/openapi.yaml: %v", err)
	}
	if len(routes) == 0 {
		t.Fatal("no routes to check")
	}
	for _, r := range routes {
		if _, ok := doc.Paths[r.Pattern][strings.ToLower(r.Method)]; !ok {
			t.Errorf("%s %s is not in api/openapi.yaml", r.Method, r.Pattern)
		}
	}
}
