package maf_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/credfactory/credfactory/kdf"
	"github.com/credfactory/credfactory/maf"
	"github.com/credfactory/credfactory/store"
)

// TestFetchKucPerTarget: a usage-constrained key listing two Targets gives
// each its own Kuc (TS-0003 §10.3 hashes the Target-FQDN), equal to what
// the device derives from its Ke for that Target, in exporter mode (the
// HSM derives from the sealed Ke) and in master mode. A Target the key does
// not list gets nothing.
func TestFetchKucPerTarget(t *testing.T) {
	stores(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		reg := maf.New(st, nil, master, kek)
		targets := []string{"in-cse.sp.example", "mn-cse.sp.example"}
		for _, mode := range []string{"exporter", "master"} {
			t.Run(mode, func(t *testing.T) {
				ekm := make([]byte, kdf.ExporterSize)
				rand.Read(ekm)
				rel, ke, err := kdf.SplitExport(ekm)
				if err != nil {
					t.Fatal(err)
				}
				keID := kdf.KeID(rel, mef)
				kctx := kdf.KucContext(keID, kdf.SUIDRSPFESPrim, "")
				if mode == "exporter" {
					sealed, err := reg.SealEnrolmentKey(ctx, keID, ke)
					if err != nil {
						t.Fatal(err)
					}
					kctx = kctx.WithSealedKe(sealed)
				} else {
					if ke, err = master.Derive(ctx, kdf.LabelEnrolmentRoot, []byte(keID)); err != nil {
						t.Fatal(err)
					}
				}
				raw, err := kctx.Marshal()
				if err != nil {
					t.Fatal(err)
				}
				c := store.Credential{ID: kdf.CredentialID(kdf.CredentialESPrimKey, keID), AssignedID: "Skuc-" + mode,
					DeviceID: "dev-kuc-" + mode, Tenant: "tenant-1", Type: store.TypePSK, SUID: int(kdf.SUIDRSPFESPrim),
					KeyID: &keID, KeID: &keID, KDFContext: raw, TargetIDs: targets,
					NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), Source: store.SourceRSPF}
				if err := reg.Register(ctx, c); err != nil {
					t.Fatal(err)
				}
				var keys [][]byte
				for _, tgt := range targets {
					got, err := reg.Fetch(ctx, keID, kdf.SUIDRSPFESPrim, []string{"unrelated.example", tgt})
					if err != nil {
						t.Fatalf("%s fetches: %v", tgt, err)
					}
					if want := kdf.Kuc(ke, int(kdf.SUIDRSPFESPrim), tgt); !bytes.Equal(got.Key, want) {
						t.Fatalf("%s got %x, the device derives %x", tgt, got.Key, want)
					}
					direct, err := reg.DeriveFor(ctx, c, tgt)
					if err != nil || !bytes.Equal(direct, got.Key) {
						t.Fatalf("DeriveFor(%s) = %x, %v; Fetch gave %x", tgt, direct, err, got.Key)
					}
					keys = append(keys, got.Key)
				}
				if bytes.Equal(keys[0], keys[1]) {
					t.Fatal("both Targets received the same key")
				}
				if _, err := reg.Fetch(ctx, keID, kdf.SUIDRSPFESPrim, []string{"other-cse.sp.example"}); !errors.Is(err, maf.ErrNotAuthorised) {
					t.Fatalf("unlisted Target: %v, want ErrNotAuthorised", err)
				}
				// No Target, no Kuc: the old "first Target" key is gone.
				if _, err := reg.Key(ctx, c); !errors.Is(err, kdf.ErrBadContext) {
					t.Fatalf("Kuc without a Target: %v, want ErrBadContext", err)
				}
			})
		}
	})
}

// TestExporterVectorsInHSM: the openssl-computed exporter vectors
// (kdf/testdata/exporter_vectors.json) come out of SoftHSM: Ke sealed by
// the real KEK, opened, imported and HMACed by the HSM for Km, Kpsa and
// each Target's Kuc.
func TestExporterVectorsInHSM(t *testing.T) {
	raw, err := os.ReadFile("../kdf/testdata/exporter_vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Vectors []struct {
			Name, Export, KeID, MAFID, EnroleeID, Km, Kpsa string
			SUID                                           int
			Kuc                                            []struct{ TargetFQDN, Kuc string }
		}
	}
	if err := json.Unmarshal(raw, &f); err != nil || len(f.Vectors) == 0 {
		t.Fatalf("vectors: %v", err)
	}
	ctx := context.Background()
	reg := maf.New(nil, nil, master, kek)
	for _, v := range f.Vectors {
		ekm, _ := hex.DecodeString(v.Export)
		_, ke, err := kdf.SplitExport(ekm)
		if err != nil {
			t.Fatal(err)
		}
		sealed, err := reg.SealEnrolmentKey(ctx, v.KeID, ke)
		if err != nil {
			t.Fatal(err)
		}
		check := func(name string, kctx kdf.Context, target, want string) {
			t.Helper()
			js, err := kctx.WithSealedKe(sealed).Marshal()
			if err != nil {
				t.Fatal(err)
			}
			got, err := reg.DeriveFor(ctx, store.Credential{ID: "x", Type: store.TypePSK, KDFContext: js}, target)
			if err != nil {
				t.Fatalf("%s %s: %v", v.Name, name, err)
			}
			if hex.EncodeToString(got) != want {
				t.Errorf("%s %s: HSM %x, openssl %s", v.Name, name, got, want)
			}
		}
		if v.Km == "" || len(v.Kuc) < 2 {
			t.Fatalf("vector %s did not decode: %+v", v.Name, v)
		}
		check("Km", kdf.KmContext(v.KeID, v.MAFID), "", v.Km)
		check("Kpsa", kdf.KpsaContext(v.KeID, v.EnroleeID), "", v.Kpsa)
		for _, k := range v.Kuc {
			check("Kuc "+k.TargetFQDN, kdf.KucContext(v.KeID, kdf.SUID(v.SUID), ""), k.TargetFQDN, k.Kuc)
		}
	}
}
