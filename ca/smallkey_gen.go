//go:build ignore

// smallkey_gen writes smallkey_<curve>.bin: for d = 1 .. 2^16, the low 32
// bits of the X coordinate of d*G, big-endian, in order of d. Run by
// `go generate ./ca`; the files are committed because building them takes
// seconds per process (P-384's affine arithmetic in crypto/elliptic is slow),
// and TestSmallKeyTables checks them against fresh multiplications.
package main

import (
	"crypto/elliptic"
	"encoding/binary"
	"log"
	"os"
)

func main() {
	for _, c := range []elliptic.Curve{elliptic.P256(), elliptic.P384()} {
		p := c.Params()
		out := make([]byte, 0, 4<<16)
		x, y := p.Gx, p.Gy
		for d := 1; d <= 1<<16; d++ {
			out = binary.BigEndian.AppendUint32(out, uint32(x.Uint64()))
			x, y = c.Add(x, y, p.Gx, p.Gy) //nolint:staticcheck // offline generator
		}
		if err := os.WriteFile("smallkey_"+p.Name+".bin", out, 0o644); err != nil {
			log.Fatal(err)
		}
	}
}
