package ca

import (
	"context"
	"testing"
)

// BenchmarkIssue measures device-profile issuance on a software P-256
// issuer, without and with pre-issuance linting, on one goroutine and on all
// cores. The issues/s metric is what the performance model compares against
// the HSM sign rate (docs/architecture.md "Performance model").
func BenchmarkIssue(b *testing.B) {
	p := newTestPKI(b)
	req := deviceRequest(b, testKey(b, "p256-b"))
	for _, bc := range []struct {
		name     string
		lint     bool
		parallel bool
	}{
		{"lint=off", false, false},
		{"lint=on", true, false},
		{"lint=off/parallel", false, true},
		{"lint=on/parallel", true, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c := p.newCA(b, func(cfg *Config) { cfg.Lint = bc.lint })
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			if bc.parallel {
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := c.Issue(ctx, req); err != nil {
							b.Error(err)
							return
						}
					}
				})
			} else {
				for b.Loop() {
					if _, err := c.Issue(ctx, req); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "issues/s")
		})
	}
}

// BenchmarkParseCSR measures what every enrolment pays before issuance:
// parsing the device's PKCS#10 request and checking its self-signature
// (proof of possession, RFC 2986 §3) under the default key policy. With
// BenchmarkIssue and the HSM's sign benchmark it is the per-certificate
// floor that bench/README.md "What bounds EST" adds up.
func BenchmarkParseCSR(b *testing.B) {
	der := makeCSR(b, testKey(b, "p256-b"), nil)
	var policy KeyPolicy
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseCSRFor(der, policy); err != nil {
			b.Fatal(err)
		}
	}
}
