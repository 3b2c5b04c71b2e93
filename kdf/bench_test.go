package kdf_test

import (
	"context"
	"testing"

	"github.com/credfactory/credfactory/kdf"
)

// BenchmarkContextDerive measures the Go side of a MAF key retrieval with a
// software master: two HMACs here against one HSM HMAC in production (SoftHSM
// HMAC runs at ~24k/s, ~40 us, on the reference machine), to show that the
// re-derivation cost is the HSM call, not this package.
func BenchmarkContextDerive(b *testing.B) {
	m := newSoftMaster(b, testMaster)
	ctx := context.Background()
	for _, c := range []struct {
		name string
		c    kdf.Context
	}{
		{"km", kdf.KmContext(testKeID, "maf.sp.example")},
		{"kpsa", kdf.KpsaContext(testKeID, "S0001-device")},
		{"kuc", kdf.KucContext(testKeID, kdf.SUIDRSPFSAEF, "cse.sp.example")},
		{"kuc-nfkc", kdf.KucContext(testKeID, kdf.SUIDRSPFSAEF, "ｃｓｅ.sp.example")},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.c.Derive(ctx, m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkUnmarshalContext is the other per-retrieval cost: decoding the
// stored context strictly.
func BenchmarkUnmarshalContext(b *testing.B) {
	js, err := kdf.KucContext(testKeID, kdf.SUIDRSPFSAEF, "cse.sp.example").Marshal()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := kdf.UnmarshalContext(js); err != nil {
			b.Fatal(err)
		}
	}
}
