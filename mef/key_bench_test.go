package mef_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"testing"

	"github.com/credfactory/credfactory/kdf"
	"github.com/credfactory/credfactory/mef"
)

// BenchmarkEnrolKey is the MEF's share of a shared-key enrolment (token
// check, HSM, registry commit on SQLite), without TLS and HTTP: exporter
// mode seals Ke with the KEK (one AES-GCM in the HSM), master mode derives
// the key (one HMAC in the HSM, the second level in Go). An exporter-mode
// device also pays a TLS handshake per key (bench path psk); the registry
// commit is usually what dominates here.
func BenchmarkEnrolKey(b *testing.B) {
	for _, mode := range []string{mef.KeyModeExporter, mef.KeyModeMaster} {
		b.Run(mode, func(b *testing.B) {
			e := newKeyEnv(b, "sqlite://"+b.TempDir()+"/bench.db")
			type job struct{ token, aid string }
			jobs := make([]job, b.N)
			for i := range jobs {
				jobs[i].token, jobs[i].aid = e.token()
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				ekm := make([]byte, kdf.ExporterSize)
				rand.Read(ekm)
				_, err := e.m.EnrolKey(context.Background(), mef.KeyRequest{Token: jobs[i].token, AssignedID: jobs[i].aid,
					RequestID: fmt.Sprintf("bench-request-%016d", i), SUID: kdf.SUIDRSPFSAEF, Mode: mode,
					Export: func(string, []byte, int) ([]byte, error) { return ekm, nil }})
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "keys/s")
		})
	}
}
