package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	_ "embed" // the small-scalar tables
	"encoding/binary"
	"math/big"
	"slices"
	"sync"
)

//go:generate go run smallkey_gen.go

// smallKeyBits bounds the private scalars refused as trivially recoverable:
// an ECDSA key d*G with 0 < d <= 2^smallKeyBits, or its negation, is refused.
// It is the bound of zlint's e_ecdsa_small_private_key (16 bits by default),
// which this check replaces: zlint walks ~20 affine point additions per
// certificate to cover 2^16 scalars from a 4,096-point table, as much CPU as
// the HSM signature, where a lookup in a table of all 2^16 points costs
// nothing. As part of the key policy it also holds with linting off, and it
// refuses before the enrolment token is spent.
const smallKeyBits = 16

// The X coordinates of d*G for d = 1 .. 2^16 (low 32 bits, big-endian, in
// order of d), made by smallkey_gen.go.
var (
	//go:embed smallkey_P-256.bin
	smallKeyP256 []byte
	//go:embed smallkey_P-384.bin
	smallKeyP384 []byte
)

// smallScalars is a curve's table sorted for lookup: X prefix << 32 | d.
// -P has P's X, so one lookup finds d and n-d alike; a hit on 32 bits is
// confirmed by a scalar multiplication (false hits: one key in 65,536).
type smallScalars struct {
	once   sync.Once
	sorted []uint64
}

var smallScalarTables = map[string]*smallScalars{"P-256": {}, "P-384": {}}

func smallScalarTable(curve elliptic.Curve) *smallScalars {
	name := curve.Params().Name
	t := smallScalarTables[name]
	if t == nil {
		return nil
	}
	t.once.Do(func() {
		raw := smallKeyP256
		if name == "P-384" {
			raw = smallKeyP384
		}
		t.sorted = make([]uint64, 0, len(raw)/4)
		for d := 1; len(raw) >= 4; d++ {
			t.sorted = append(t.sorted, uint64(binary.BigEndian.Uint32(raw))<<32|uint64(d))
			raw = raw[4:]
		}
		slices.Sort(t.sorted)
	})
	return t
}

// smallPrivateKey reports whether pub's private scalar, or its negation, is
// at most 2^smallKeyBits, and returns it.
func smallPrivateKey(pub *ecdsa.PublicKey) (uint32, bool) {
	t := smallScalarTable(pub.Curve)
	if t == nil || pub.X == nil {
		return 0, false
	}
	x := uint64(uint32(pub.X.Uint64())) << 32
	i, _ := slices.BinarySearch(t.sorted, x)
	for ; i < len(t.sorted) && t.sorted[i]&^0xffffffff == x; i++ {
		d := uint32(t.sorted[i])
		gx, _ := pub.Curve.ScalarBaseMult(big.NewInt(int64(d)).Bytes()) //nolint:staticcheck // confirms a 32-bit hit
		if gx.Cmp(pub.X) == 0 {
			return d, true
		}
	}
	return 0, false
}
