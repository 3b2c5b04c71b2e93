package maf_test

import (
	"os"
	"strings"
	"testing"

	"github.com/credfactory/credfactory/maf"
	"go.yaml.in/yaml/v3"
)

// TestRoutesAreDocumented keeps api/openapi.yaml and the MAF's routes in
// step: every route must be there with its method.
func TestRoutesAreDocumented(t *testing.T) {
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
	for _, r := range maf.NewAPI(nil, nil, nil).Routes() {
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
