package hsm_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"sync"
	"testing"
)

// parallel runs op b.N times spread over g goroutines and reports ops/s, so
// the goroutine count is exact (RunParallel scales with GOMAXPROCS).
func parallel(b *testing.B, g int, op func() error) {
	b.Helper()
	var wg sync.WaitGroup
	per := b.N / g
	extra := b.N % g
	b.ResetTimer()
	for i := 0; i < g; i++ {
		n := per
		if i < extra {
			n++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < n; j++ {
				if err := op(); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

var goroutines = []int{1, 2, 4, 8}

// BenchmarkECDSASign compares the HSM's P-256 signature with the stdlib's
// in the same run. The pool has 8 sessions so it never limits the goroutines.
func BenchmarkECDSASign(b *testing.B) {
	m := open(b, 8, nil)
	hsmSigner, err := m.Signer(context.Background(), p256URI)
	if err != nil {
		b.Fatal(err)
	}
	goKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	digest := sha256.Sum256([]byte("bench"))
	for _, s := range []struct {
		name   string
		signer crypto.Signer
	}{{"softhsm", hsmSigner}, {"stdlib", goKey}} {
		for _, g := range goroutines {
			b.Run(fmt.Sprintf("%s/goroutines=%d", s.name, g), func(b *testing.B) {
				parallel(b, g, func() error {
					_, err := s.signer.Sign(rand.Reader, digest[:], crypto.SHA256)
					return err
				})
			})
		}
	}
}

// BenchmarkECDSASignPoolSize shows what the pool size does to 8 goroutines
// on SoftHSM, whose global lock makes more sessions buy little.
func BenchmarkECDSASignPoolSize(b *testing.B) {
	digest := sha256.Sum256([]byte("bench"))
	for _, size := range []int{1, 2, 4, 8} {
		b.Run(fmt.Sprintf("sessions=%d", size), func(b *testing.B) {
			m := open(b, size, nil)
			s, err := m.Signer(context.Background(), p256URI)
			if err != nil {
				b.Fatal(err)
			}
			parallel(b, 8, func() error {
				_, err := s.Sign(rand.Reader, digest[:], crypto.SHA256)
				return err
			})
		})
	}
}

func BenchmarkHMACDerive(b *testing.B) {
	m := open(b, 8, nil)
	k, err := m.HMACKey(hmacURI)
	if err != nil {
		b.Fatal(err)
	}
	keID := []byte("0123456789abcdef0123456789abcdef@mef.sp.example")
	for _, g := range goroutines {
		b.Run(fmt.Sprintf("goroutines=%d", g), func(b *testing.B) {
			parallel(b, g, func() error {
				_, err := k.Derive(context.Background(), "oneM2M Enrolment Key", keID)
				return err
			})
		})
	}
}

func BenchmarkAESGCMSeal(b *testing.B) {
	m := open(b, 8, nil)
	k, err := m.AEADKey(kekURI)
	if err != nil {
		b.Fatal(err)
	}
	pt, aad := make([]byte, 32), []byte("14-0123@mef.sp.example")
	for _, g := range goroutines {
		b.Run(fmt.Sprintf("goroutines=%d", g), func(b *testing.B) {
			parallel(b, g, func() error {
				_, err := k.Seal(context.Background(), pt, aad)
				return err
			})
		})
	}
}

// BenchmarkHMACSealed is an exporter-mode key retrieval's HSM work: open
// the sealed Ke, import it, one HMAC, destroy (compare BenchmarkHMACDerive,
// a master-mode retrieval's, and BenchmarkAESGCMSeal, an exporter-mode
// enrolment's).
func BenchmarkHMACSealed(b *testing.B) {
	m := open(b, 8, nil)
	k, err := m.AEADKey(kekURI)
	if err != nil {
		b.Fatal(err)
	}
	aad := []byte("credfactory sealed Ke\x000123456789abcdef0123456789abcdef@mef.sp.example")
	sealed, err := k.Seal(context.Background(), make([]byte, 32), aad)
	if err != nil {
		b.Fatal(err)
	}
	msgs := [][]byte{[]byte("oneM2M Enrolment Key to Usage-Constrained Symmetric Key derivation23in-cse.sp.example")}
	for _, g := range []int{1, 2} {
		b.Run(fmt.Sprintf("goroutines=%d", g), func(b *testing.B) {
			parallel(b, g, func() error {
				_, err := k.HMACSealed(context.Background(), sealed, aad, msgs)
				return err
			})
		})
	}
}
