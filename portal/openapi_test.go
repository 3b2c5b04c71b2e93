package portal_test

import (
	"os"
	"strings"
	"testing"

	"github.com/credfactory/credfactory/portal"
	"go.yaml.in/yaml/v3"
)

// TestAPIRoutesAreDocumented holds api/openapi.yaml in step with the
// portal's JSON routes: each must be there with its method.
func TestAPIRoutesAreDocumented(t *testing.T) {
	raw, err := os.ReadFile("../api/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Paths map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	routes := portal.New(portal.Config{}, nil, nil, nil, nil, nil).APIRoutes()
	if len(routes) == 0 {
		t.Fatal("no API routes")
	}
	for _, r := range routes {
		ops, ok := doc.Paths[r.Pattern]
		if !ok {
			t.Errorf("%s is not in api/openapi.yaml", r.Pattern)
			continue
		}
		if _, ok := ops[strings.ToLower(r.Method)]; !ok {
			t.Errorf("%s %s is not in api/openapi.yaml", r.Method, r.Pattern)
		}
	}
}
