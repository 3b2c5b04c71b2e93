package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBenchSmoke runs a tiny credfactory bench on every path: it starts its
// own server, measures, and checks the registry agrees with what it counted.
func TestBenchSmoke(t *testing.T) {
	report := filepath.Join(t.TempDir(), "bench.json")
	plot := filepath.Join(t.TempDir(), "bench.svg")
	cmd := exec.Command(bin, "bench", "--concurrency", "1,2", "--duration", "1s", "--tokens", "40",
		"--paths", "est,psk,forward,est-newconn", "--batches", "5", "--json", report, "--plot", plot)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "verified: ") {
		t.Fatalf("no registry verification in:\n%s", out)
	}
	var r benchReport
	raw, _ := os.ReadFile(report)
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatal(err)
	}
	svg, _ := os.ReadFile(plot)
	if !strings.HasPrefix(string(svg), "<svg") || !strings.Contains(string(svg), "forward ×5") || strings.Count(string(svg), "<polyline") != 8 {
		t.Fatalf("plot:\n%.400s", svg)
	}
	if len(r.Results) != 8 || r.ServerRSSMiB <= 0 {
		t.Fatalf("report: %+v", r)
	}
	for _, x := range r.Results {
		if x.Enrolments == 0 || len(x.Errors) != 0 || x.P99 <= 0 || x.Path != "forward" && x.HSMOpsPerSec <= 0 {
			t.Errorf("%s: %+v", x.Path, x)
		}
	}
}
