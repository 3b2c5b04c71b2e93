package ratelimit

import (
	"net/netip"
	"strconv"
	"sync/atomic"
	"testing"
)

// BenchmarkAllowParallel is the hot path under load: every goroutine asks
// for its own stream of keys (sources spread over many addresses, as at a
// factory line's front end), so the cost is the hash, the shard mutex and
// the map, with the contention that all cores bring.
func BenchmarkAllowParallel(b *testing.B) {
	for _, keys := range []int{1, 1024, 100_000} {
		b.Run("source/keys="+strconv.Itoa(keys), func(b *testing.B) {
			l := New[Addr](Options{Name: "b", Rate: 1e6, Burst: 1e6})
			addrs := make([]Addr, keys)
			for i := range addrs {
				addrs[i] = AddrOf(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
			}
			var next atomic.Int64
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := int(next.Add(7919))
				for pb.Next() {
					l.Allow(addrs[i%keys])
					i++
				}
			})
		})
		b.Run("tenant/keys="+strconv.Itoa(keys), func(b *testing.B) {
			l := New[string](Options{Name: "b", Rate: 1e6, Burst: 1e6})
			names := make([]string, keys)
			for i := range names {
				names[i] = "8c4f2a0e-5b1d-4c3e-9f7a-" + strconv.Itoa(100000000000+i)
			}
			var next atomic.Int64
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := int(next.Add(7919))
				for pb.Next() {
					l.Allow(names[i%keys])
					i++
				}
			})
		})
	}
}

// BenchmarkAllowRefused: a flood from one source that is being refused.
func BenchmarkAllowRefused(b *testing.B) {
	l := New[Addr](Options{Name: "b", Rate: 1, Burst: 1})
	a := AddrOf(netip.MustParseAddr("192.0.2.1"))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.Allow(a)
		}
	})
}
