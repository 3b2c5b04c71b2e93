package kdf_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"testing"

	"github.com/credfactory/credfactory/kdf"
)

// exporterVector is one entry of testdata/exporter_vectors.json, made by
// testdata/gen_exporter_vectors.sh with openssl.
type exporterVector struct {
	Name         string `json:"name"`
	Export       string `json:"export"`
	MEFFQDN      string `json:"mefFqdn"`
	MAFID        string `json:"mafId"`
	EnroleeID    string `json:"enroleeId"`
	SUID         int    `json:"suid"`
	RelativeKeID string `json:"relativeKeId"`
	KeID         string `json:"keId"`
	Ke           string `json:"ke"`
	Km           string `json:"km"`
	Kpsa         string `json:"kpsa"`
	Kuc          []struct {
		TargetFQDN string `json:"targetFqdn"`
		Kuc        string `json:"kuc"`
	} `json:"kuc"`
}

func loadExporterVectors(t *testing.T) []exporterVector {
	t.Helper()
	raw, err := os.ReadFile("testdata/exporter_vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var f struct {
		Comment string           `json:"comment"`
		Vectors []exporterVector `json:"vectors"`
	}
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("exporter_vectors.json: %v", err)
	}
	if len(f.Vectors) == 0 {
		t.Fatal("exporter_vectors.json has no vectors")
	}
	return f.Vectors
}

// fixedExporter plays a TLS session whose export is ekm, and checks it is
// asked exactly what TS-0003 §10.3 asks.
func fixedExporter(t *testing.T, ekm []byte) kdf.Exporter {
	return func(label string, context []byte, length int) ([]byte, error) {
		if label != "EXPORTER-oneM2M-Bootstrap" || context != nil || length != 48 {
			t.Errorf("exporter asked label %q, context %x (nil %v), length %d", label, context, context == nil, length)
		}
		return bytes.Clone(ekm), nil
	}
}

// softSealed is a software stand-in for hsm.AEADKey's HMACSealed: AES-GCM
// with a random key, then HMAC-SHA256 with the opened Ke.
type softSealed struct {
	aead  cipher.AEAD
	calls int
}

func newSoftSealed(t testing.TB) *softSealed {
	k := make([]byte, 32)
	rand.Read(k)
	b, err := aes.NewCipher(k)
	if err != nil {
		t.Fatal(err)
	}
	a, err := cipher.NewGCM(b)
	if err != nil {
		t.Fatal(err)
	}
	return &softSealed{aead: a}
}

func (s *softSealed) seal(ke, aad []byte) []byte {
	nonce := make([]byte, s.aead.NonceSize())
	rand.Read(nonce)
	return s.aead.Seal(nonce, nonce, ke, aad)
}

func (s *softSealed) HMACSealed(_ context.Context, sealed, aad []byte, msgs [][]byte) ([][]byte, error) {
	s.calls++
	n := s.aead.NonceSize()
	ke, err := s.aead.Open(nil, sealed[:n], sealed[n:], aad)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(msgs))
	for i, m := range msgs {
		h := hmac.New(sha256.New, ke)
		h.Write(m)
		out[i] = h.Sum(nil)
	}
	return out, nil
}

func TestExporterVectors(t *testing.T) {
	ctx := context.Background()
	for _, v := range loadExporterVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			ekm, _ := hex.DecodeString(v.Export)
			rel, ke, err := kdf.ExportEnrolmentKey(fixedExporter(t, ekm))
			if err != nil {
				t.Fatal(err)
			}
			checkHex(t, "RelativeKeID", rel, v.RelativeKeID)
			checkHex(t, "Ke", ke, v.Ke)
			keID := kdf.KeID(rel, v.MEFFQDN)
			if keID != v.KeID {
				t.Errorf("KeID %s, want %s", keID, v.KeID)
			}
			checkHex(t, "Km", kdf.Km(ke, v.MAFID), v.Km)
			checkHex(t, "Kpsa", kdf.Kpsa(ke, v.EnroleeID), v.Kpsa)

			// The MAF's path: Ke sealed in the context, each key
			// re-derived "in the HSM" (here its software twin).
			ss := newSoftSealed(t)
			sealed := ss.seal(ke, kdf.SealedKeAAD(keID))
			roots := kdf.Roots{Sealed: ss}
			for _, c := range []struct {
				name string
				c    kdf.Context
				want string
			}{
				{"Km", kdf.KmContext(keID, v.MAFID), v.Km},
				{"Kpsa", kdf.KpsaContext(keID, v.EnroleeID), v.Kpsa},
			} {
				js, err := c.c.WithSealedKe(sealed).Marshal()
				if err != nil {
					t.Fatal(err)
				}
				k, err := kdf.DeriveStoredFor(ctx, roots, js, "")
				if err != nil {
					t.Fatalf("%s: %v", c.name, err)
				}
				checkHex(t, c.name+" via sealed context", k, c.want)
			}
			kucCtx, err := kdf.KucContext(keID, kdf.SUID(v.SUID), "").WithSealedKe(sealed).Marshal()
			if err != nil {
				t.Fatal(err)
			}
			seen := map[string]bool{}
			for _, k := range v.Kuc {
				checkHex(t, "Kuc "+k.TargetFQDN, kdf.Kuc(ke, v.SUID, k.TargetFQDN), k.Kuc)
				got, err := kdf.DeriveStoredFor(ctx, roots, kucCtx, k.TargetFQDN)
				if err != nil {
					t.Fatal(err)
				}
				checkHex(t, "Kuc via sealed context for "+k.TargetFQDN, got, k.Kuc)
				if seen[k.Kuc] {
					t.Errorf("two Targets share Kuc %s", k.Kuc)
				}
				seen[k.Kuc] = true
			}
			if len(seen) < 2 {
				t.Error("vector has fewer than two Targets")
			}
			// A Kuc context without a Target cannot be derived: there is
			// no "first Target" key any more.
			if _, err := kdf.DeriveStoredFor(ctx, roots, kucCtx, ""); !errors.Is(err, kdf.ErrBadContext) {
				t.Errorf("Kuc without a Target: %v, want ErrBadContext", err)
			}
			// The sealed Ke is bound to its KeID.
			other := kdf.KmContext("ffeeddccbbaa99887766554433221100@mef.sp.example", v.MAFID).WithSealedKe(sealed)
			if _, err := other.DeriveFor(ctx, roots, ""); err == nil {
				t.Error("a sealed Ke opened under another KeID")
			}
			// An exporter context needs the sealed-key deriver.
			if _, err := kdf.DeriveStoredFor(ctx, kdf.Roots{Master: newSoftMaster(t, testMaster)}, kucCtx, v.Kuc[0].TargetFQDN); err == nil {
				t.Error("exporter context derived without a sealed-key deriver")
			}
		})
	}
}

// TestExporterVectorsOpenSSL recomputes every exporter vector with openssl
// from the split the file states, so the expected values are an
// independent HMAC's (see TestVectorsOpenSSL for why it may skip).
func TestExporterVectorsOpenSSL(t *testing.T) {
	bin, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("openssl is required under CI: %v", err)
		}
		t.Skipf("openssl is not installed (%v)", err)
	}
	for _, v := range loadExporterVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			if v.RelativeKeID != v.Export[:32] || v.Ke != v.Export[32:] || v.KeID != v.RelativeKeID+"@"+v.MEFFQDN {
				t.Fatalf("vector's split is not first 16 / last 32 bytes: %+v", v)
			}
			for _, c := range []struct{ name, msg, want string }{
				{"Km", kdf.LabelMasterCredential + v.MAFID, v.Km},
				{"Kpsa", kdf.LabelProvisionedSecureConnection + v.EnroleeID, v.Kpsa},
			} {
				if got := opensslHMAC(t, bin, v.Ke, []byte(c.msg)); got != c.want {
					t.Errorf("%s: openssl %s, vectors %s", c.name, got, c.want)
				}
			}
			for _, k := range v.Kuc {
				if got := opensslHMAC(t, bin, v.Ke, []byte(kdf.LabelUsageConstrained+itoa(v.SUID)+k.TargetFQDN)); got != k.Kuc {
					t.Errorf("Kuc %s: openssl %s, vectors %s", k.TargetFQDN, got, k.Kuc)
				}
			}
		})
	}
}

func TestExportEnrolmentKeyRefusals(t *testing.T) {
	goErr := errors.New("crypto/tls: ExportKeyingMaterial is unavailable when neither TLS 1.3 nor Extended Master Secret are negotiated")
	for name, exp := range map[string]kdf.Exporter{
		"no TLS":          nil,
		"no EMS":          func(string, []byte, int) ([]byte, error) { return nil, goErr },
		"short export":    func(string, []byte, int) ([]byte, error) { return make([]byte, 32), nil },
		"too long export": func(string, []byte, int) ([]byte, error) { return make([]byte, 64), nil },
	} {
		rel, ke, err := kdf.ExportEnrolmentKey(exp)
		if !errors.Is(err, kdf.ErrExport) || rel != nil || ke != nil {
			t.Errorf("%s: %x %x %v, want ErrExport", name, rel, ke, err)
		}
	}
}
