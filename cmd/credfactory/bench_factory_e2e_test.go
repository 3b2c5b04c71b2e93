package main

import (
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// TestBenchFactorySmoke runs a small factory line: every phase reports its
// rate, the registry verification passes, and the last line is the wall
// time in the form make bench's readers grep for.
func TestBenchFactorySmoke(t *testing.T) {
	cmd := exec.Command(bin, "bench", "--factory", "300")
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bench --factory: %v\n%s", err, out)
	}
	text := strings.TrimSpace(string(out))
	for _, phase := range []string{"upload", "bundles", "est", "verify"} {
		if !regexp.MustCompile(`factory ` + phase + ` +300 in +[0-9.]+ s`).MatchString(text) {
			t.Errorf("no %s phase with 300 items in:\n%s", phase, text)
		}
	}
	if !strings.Contains(text, "verified: 300 enrolments = 300 enrolled devices") || !strings.Contains(text, "server RSS: peak") {
		t.Errorf("no verification or RSS in:\n%s", text)
	}
	lines := strings.Split(text, "\n")
	if last := lines[len(lines)-1]; !regexp.MustCompile(`^factory: 300 devices in [0-9]+\.[0-9] s$`).MatchString(last) {
		t.Fatalf("last line %q", last)
	}
}
