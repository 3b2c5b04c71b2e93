package kdf_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/credfactory/credfactory/kdf"
	"golang.org/x/text/unicode/norm"
)

// vectorFile is testdata/vectors.json, made by testdata/gen_vectors.sh with
// openssl, not with this package.
type vectorFile struct {
	Comment string `json:"comment"`
	Labels  struct {
		EnrolmentRoot               string `json:"enrolmentRoot"`
		MasterCredential            string `json:"masterCredential"`
		ProvisionedSecureConnection string `json:"provisionedSecureConnection"`
		UsageConstrained            string `json:"usageConstrained"`
	} `json:"labels"`
	Vectors []vector `json:"vectors"`
}

type vector struct {
	Name           string `json:"name"`
	MasterKey      string `json:"masterKey"`
	KeID           string `json:"keId"`
	MAFID          string `json:"mafId"`
	MAFIDNFKC      string `json:"mafIdNfkc"`
	EnroleeID      string `json:"enroleeId"`
	EnroleeIDNFKC  string `json:"enroleeIdNfkc"`
	SUID           int    `json:"suid"`
	TargetFQDN     string `json:"targetFqdn"`
	TargetFQDNNFKC string `json:"targetFqdnNfkc"`
	Ke             string `json:"ke"`
	Km             string `json:"km"`
	Kpsa           string `json:"kpsa"`
	Kuc            string `json:"kuc"`
}

func loadVectors(t *testing.T) vectorFile {
	t.Helper()
	raw, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var f vectorFile
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("vectors.json: %v", err)
	}
	if len(f.Vectors) == 0 {
		t.Fatal("vectors.json has no vectors")
	}
	return f
}

// TestLabels pins the labels to the ones the vectors were generated with
// (copied from TS-0003 §10.3, docs/onem2m.md "Key hierarchy", into
// gen_vectors.sh).
func TestLabels(t *testing.T) {
	f := loadVectors(t)
	for _, c := range []struct{ got, want string }{
		{kdf.LabelEnrolmentRoot, f.Labels.EnrolmentRoot},
		{kdf.LabelMasterCredential, f.Labels.MasterCredential},
		{kdf.LabelProvisionedSecureConnection, f.Labels.ProvisionedSecureConnection},
		{kdf.LabelUsageConstrained, f.Labels.UsageConstrained},
	} {
		if c.got != c.want {
			t.Errorf("label %q, vectors say %q", c.got, c.want)
		}
	}
}

func TestVectors(t *testing.T) {
	f := loadVectors(t)
	sawNFKCChange := false
	for _, v := range f.Vectors {
		t.Run(v.Name, func(t *testing.T) {
			// The hand-written NFKC forms in the file must be what
			// x/text produces, or the vector tests nothing.
			for _, id := range []struct{ raw, want string }{
				{v.MAFID, v.MAFIDNFKC}, {v.EnroleeID, v.EnroleeIDNFKC}, {v.TargetFQDN, v.TargetFQDNNFKC},
			} {
				if got := norm.NFKC.String(id.raw); got != id.want {
					t.Errorf("NFKC(%q) = %q, vectors say %q", id.raw, got, id.want)
				}
				if id.raw != id.want {
					sawNFKCChange = true
				}
			}

			ctx := context.Background()
			m := newSoftMaster(t, v.MasterKey)
			ke, err := kdf.EnrolmentKey(ctx, m, v.KeID)
			if err != nil {
				t.Fatal(err)
			}
			checkHex(t, "Ke", ke, v.Ke)
			// Raw (un-normalised) IDs go in: normalisation is the
			// package's job.
			checkHex(t, "Km", kdf.Km(ke, v.MAFID), v.Km)
			checkHex(t, "Kpsa", kdf.Kpsa(ke, v.EnroleeID), v.Kpsa)
			checkHex(t, "Kuc", kdf.Kuc(ke, v.SUID, v.TargetFQDN), v.Kuc)

			// The MAF path: stored context -> JSON -> re-derived key.
			for _, c := range []struct {
				name string
				c    kdf.Context
				want string
			}{
				{"Km", kdf.KmContext(v.KeID, v.MAFID), v.Km},
				{"Kpsa", kdf.KpsaContext(v.KeID, v.EnroleeID), v.Kpsa},
				{"Kuc", kdf.KucContext(v.KeID, kdf.SUID(v.SUID), v.TargetFQDN), v.Kuc},
			} {
				js, err := c.c.Marshal()
				if err != nil {
					t.Fatalf("%s: Marshal: %v", c.name, err)
				}
				back, err := kdf.UnmarshalContext(js)
				if err != nil {
					t.Fatalf("%s: UnmarshalContext(%s): %v", c.name, js, err)
				}
				k, err := back.Derive(ctx, m)
				if err != nil {
					t.Fatalf("%s: Derive: %v", c.name, err)
				}
				checkHex(t, c.name+" via Context", k, c.want)
			}
		})
	}
	if !sawNFKCChange {
		t.Error("no vector has an ID that NFKC changes")
	}
}

// TestVectorsOpenSSL recomputes every vector with openssl from the labels
// and NFKC forms in the file, so the expected values cannot drift from an
// independent HMAC (and a hand edit of vectors.json is caught). Without
// openssl it skips, except under CI (env CI set), where it fails: make
// deps-test installs it, and TestVectors alone would only check the Go code
// against values the Go code once printed.
func TestVectorsOpenSSL(t *testing.T) {
	bin, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("openssl is required under CI: %v (make deps-test installs it)", err)
		}
		t.Skipf("openssl is not installed (%v): make deps-test installs it", err)
	}
	f := loadVectors(t)
	for _, v := range f.Vectors {
		t.Run(v.Name, func(t *testing.T) {
			ke := opensslHMAC(t, bin, v.MasterKey, []byte(f.Labels.EnrolmentRoot+"\x00"+v.KeID))
			if ke != v.Ke {
				t.Errorf("Ke: openssl %s, vectors %s", ke, v.Ke)
			}
			// Chain from openssl's own Ke, not the file's.
			for _, c := range []struct {
				name, msg, want string
			}{
				{"Km", f.Labels.MasterCredential + v.MAFIDNFKC, v.Km},
				{"Kpsa", f.Labels.ProvisionedSecureConnection + v.EnroleeIDNFKC, v.Kpsa},
				{"Kuc", f.Labels.UsageConstrained + itoa(v.SUID) + v.TargetFQDNNFKC, v.Kuc},
			} {
				if got := opensslHMAC(t, bin, ke, []byte(c.msg)); got != c.want {
					t.Errorf("%s: openssl %s, vectors %s", c.name, got, c.want)
				}
			}
		})
	}
}

func opensslHMAC(t *testing.T, bin, keyHex string, msg []byte) string {
	t.Helper()
	cmd := exec.Command(bin, "dgst", "-sha256", "-mac", "HMAC", "-macopt", "hexkey:"+keyHex, "-r")
	cmd.Stdin = bytes.NewReader(msg)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("openssl: %v", err)
	}
	// -r prints "<hex> *stdin".
	fields := strings.Fields(string(out))
	if len(fields) == 0 || len(fields[0]) != 64 {
		t.Fatalf("openssl output %q", out)
	}
	return fields[0]
}

// itoa is spelled out rather than taken from strconv so the SUID encoding
// in this independent check is visibly "decimal ASCII digits".
func itoa(n int) string {
	if n < 10 || n > 99 { // every valid SUID has two digits
		panic("SUID out of range")
	}
	return string([]byte{byte('0' + n/10), byte('0' + n%10)})
}

func checkHex(t *testing.T, name string, got []byte, want string) {
	t.Helper()
	if h := hex.EncodeToString(got); h != want {
		t.Errorf("%s = %s, want %s", name, h, want)
	}
}
