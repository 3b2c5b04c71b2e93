package mef_test

import (
	"os"
	"strings"
	"testing"

	"github.com/credfactory/credfactory/mef"
	"go.yaml.in/yaml/v3"
)

// TestRoutesAreDocumented holds api/openapi.yaml in step with the MEF.
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
	for _, r := range mef.New(mef.Config{}, nil, nil, nil, nil, nil, nil, nil, nil).Routes() {
		if _, ok := doc.Paths[r.Pattern][strings.ToLower(r.Method)]; !ok {
			t.Errorf("%s %s is not in api/openapi.yaml", r.Method, r.Pattern)
		}
	}
}
