package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/credfactory/credfactory/client"
	"github.com/credfactory/credfactory/kdf"
)

// TestEnrollPSKModes: credfactory enroll --psk in both key modes against the
// real server. Exporter mode (the default) writes keys the device derived
// itself, one Kuc per Target, and keeps only the export of the session that
// gave the key; master mode writes the key the MEF sent; bad flags and a
// Kuc Target that is no FQDN are refused without spending the token.
func TestEnrollPSKModes(t *testing.T) {
	s := newSeed(t)
	read := func(dir string) client.KeyAnswer {
		t.Helper()
		var k client.KeyAnswer
		if err := json.Unmarshal([]byte(readFile(t, filepath.Join(dir, "psk.json"))), &k); err != nil {
			t.Fatal(err)
		}
		return k
	}

	// Exporter mode, a usage-constrained key for two Targets.
	b4 := s.bundle("dev-4", nil)
	out4 := filepath.Join(t.TempDir(), "dev-4")
	s.cli("enroll", "--bundle", s.writeBundle(b4), "--out", out4, "--psk", "--suid", "23",
		"--target", "in-cse.sp.example", "--target", "mn-cse.sp.example")
	k := read(out4)
	if k.Mode != "exporter" || len(k.Ke) != 32 || k.Key != nil || len(k.TargetKeys) != 2 || k.CredentialID != "13-"+k.KeID {
		t.Fatalf("exporter-mode psk.json: %+v", k)
	}
	for _, tk := range k.TargetKeys {
		if !bytes.Equal(tk.Key, kdf.Kuc(k.Ke, 23, tk.TargetID)) {
			t.Fatalf("Kuc for %s is not HMAC(Ke, label || 23 || FQDN)", tk.TargetID)
		}
	}
	if bytes.Equal(k.TargetKeys[0].Key, k.TargetKeys[1].Key) {
		t.Fatal("both Targets got the same Kuc")
	}
	rel, _, _ := strings.Cut(k.KeID, "@")
	entries, err := os.ReadDir(filepath.Join(out4, "sessions"))
	if err != nil || len(entries) != 1 || entries[0].Name() != rel {
		t.Fatalf("kept sessions %v (%v), want only %s", entries, err, rel)
	}
	if st, err := os.Stat(filepath.Join(out4, "sessions", rel)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("session export file: %v %v", st, err)
	}

	// Master mode: the MEF sends the key.
	b5 := s.bundle("dev-5", nil)
	out5 := filepath.Join(t.TempDir(), "dev-5")
	s.cli("enroll", "--bundle", s.writeBundle(b5), "--out", out5, "--psk", "--suid", "22", "--key-mode", "master", "--target", b4.AssignedID)
	if m := read(out5); m.Mode != "master" || len(m.Key) != 32 || m.Ke != nil || m.EnroleeID != b5.AssignedID {
		t.Fatalf("master-mode psk.json: %+v", m)
	}

	// Refusals that spend nothing: the token then enrols.
	b6 := s.bundle("dev-6", nil)
	bundle6 := s.writeBundle(b6)
	for name, c := range map[string]struct {
		args []string
		want string
	}{
		"unknown mode":        {[]string{"--suid", "22", "--key-mode", "hsm"}, "--key-mode"},
		"Kuc target not FQDN": {[]string{"--suid", "24", "--target", b4.AssignedID}, "bad_target"},
	} {
		args := append([]string{"enroll", "--bundle", bundle6, "--out", t.TempDir(), "--psk"}, c.args...)
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), c.want) {
			t.Errorf("%s: %v\n%s", name, err, out)
		}
	}
	out6 := filepath.Join(t.TempDir(), "dev-6")
	s.cli("enroll", "--bundle", bundle6, "--out", out6, "--psk", "--suid", "21")
	if k6 := read(out6); k6.Mode != "exporter" || len(k6.Key) != 32 || !strings.HasPrefix(k6.CredentialID, "11-") {
		t.Fatalf("after the refusals: %+v", k6)
	}
}

// TestExporterKucPerTargetOverMAF: the whole path through the real server.
// Two Targets registered by FQDN (TS-0003 §8.8); a device enrols in exporter
// mode for a usage-constrained key naming both and derives each Target's
// Kuc from its own TLS session; each Target fetches over the MAF route with
// the credential its registration returned, and receives exactly the key
// the device derived for it, different from the other's. A registered
// Target the key does not name gets nothing.
func TestExporterKucPerTargetOverMAF(t *testing.T) {
	onBothBackends(t, func(t *testing.T, _ string, env []string) {
		s := newSeed(t, env...)
		s.cli("admin", "add-admin-fqdn", "--stakeholder", "alice", "--fqdn", "alice.example")
		exp := time.Now().Add(24 * time.Hour).UTC().Format(time.RFC3339)
		auth := map[string]string{}
		for _, fqdn := range []string{"in-cse.alice.example", "mn-cse.alice.example", "other-cse.alice.example"} {
			status, body := s.call(s.alice, "POST", "/maf/v1/clients", "application/json",
				mustJSON(map[string]any{"fqdn": fqdn, "adminFQDN": "alice.example", "expirationTime": exp}))
			if status != 201 {
				t.Fatalf("register %s: %d %v", fqdn, status, body)
			}
			auth[fqdn] = body["assignedSymmKeyID"].(string) + ":" + body["credential"].(string)
		}
		b := s.bundle("dev-2", nil)
		out := filepath.Join(t.TempDir(), "dev-2")
		s.cli("enroll", "--bundle", s.writeBundle(b), "--out", out, "--psk", "--suid", "24",
			"--target", "in-cse.alice.example", "--target", "mn-cse.alice.example")
		var psk client.KeyAnswer
		if err := json.Unmarshal([]byte(readFile(t, filepath.Join(out, "psk.json"))), &psk); err != nil {
			t.Fatal(err)
		}
		if psk.Mode != "exporter" || len(psk.TargetKeys) != 2 || bytes.Equal(psk.TargetKeys[0].Key, psk.TargetKeys[1].Key) {
			t.Fatalf("psk.json: %+v", psk)
		}
		fetch := "/maf/v1/fetchCredentials/" + psk.KeID + "/24"
		for _, tk := range psk.TargetKeys {
			status, got := s.call(auth[tk.TargetID], "GET", fetch, "", nil)
			if status != 200 || got["credential"] != base64.StdEncoding.EncodeToString(tk.Key) || got["enroleeId"] != b.AssignedID {
				t.Fatalf("%s fetches: %d %v, the device derived %x", tk.TargetID, status, got, tk.Key)
			}
		}
		if status, body := s.call(auth["other-cse.alice.example"], "GET", fetch, "", nil); status != 403 || errCode(body) != "target_not_authorised" {
			t.Fatalf("a Target the key does not name: %d %v", status, body)
		}
	})
}
