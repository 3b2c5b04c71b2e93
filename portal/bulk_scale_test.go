package portal_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/credfactory/credfactory/portal"
	"github.com/credfactory/credfactory/store"
)

// TestBulkHundredThousandBoundedMemory sends 100,000 rows through the real
// route (TLS, SoftHSM, SQLite) as a stream and reads the answer as a
// stream, sampling the heap of the process, which holds server and client
// both. Holding every bundle (each about a kilobyte with its trust anchor)
// would take ~100 MiB; the bound is well under it. It also reports the
// rate: the bulk route's figure on this machine.
func TestBulkHundredThousandBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("100,000 rows: not in -short")
	}
	const n = 100_000
	e := newPageEnv(t)
	ctx := context.Background()
	maker := e.stakeholder(t, "scale-line", store.RoleManufacturer, "correct horse battery staple")
	who := portal.Principal{Stakeholder: maker, Via: "session"}
	i := 0
	report, err := e.portal.Upload(ctx, who, func() (portal.DeviceRow, error) {
		if i == n {
			return portal.DeviceRow{}, io.EOF
		}
		i++
		return portal.DeviceRow{DeviceID: fmt.Sprintf("scale-%06d", i)}, nil
	})
	if err != nil || report.Inserted != n {
		t.Fatalf("upload: %+v %v", report.Inserted, err)
	}
	key, _, err := e.portal.NewAPIKey(ctx, who, "scale")
	if err != nil {
		t.Fatal(err)
	}

	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				var m runtime.MemStats
				runtime.ReadMemStats(&m)
				if m.HeapInuse > peak.Load() {
					peak.Store(m.HeapInuse)
				}
			}
		}
	}()

	pr, pw := io.Pipe()
	go func() {
		bw := bufio.NewWriter(pw)
		bw.WriteString("deviceId\n")
		for j := 1; j <= n; j++ {
			fmt.Fprintf(bw, "scale-%06d\n", j)
		}
		pw.CloseWithError(bw.Flush())
	}()
	req, _ := http.NewRequest("POST", e.base+"/api/v1/bundles", pr)
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "text/csv")
	req.Header.Set("Accept", "application/x-ndjson")
	req.Header.Set("Idempotency-Key", "scale-1")
	roots := x509.NewCertPool()
	roots.AddCert(e.root)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	start, cpu0 := time.Now(), processCPU()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	issued, rows := 0, 0
	var summary struct {
		Summary *portal.BulkSummary `json:"summary"`
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var r portal.BulkResult
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("line %d: %v", rows+1, err)
		}
		if r.Row == 0 {
			if err := json.Unmarshal(sc.Bytes(), &summary); err != nil {
				t.Fatal(err)
			}
			continue
		}
		rows++
		if r.Status == portal.BulkIssued && r.Bundle != nil && r.Token != "" {
			issued++
		} else if rows-issued < 5 {
			t.Errorf("row %d: %s %+v", r.Row, r.Status, r.Error)
		}
	}
	elapsed, cpu := time.Since(start), processCPU()-cpu0
	close(stop)
	<-sampled
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if issued != n || summary.Summary == nil || !summary.Summary.Complete || summary.Summary.Issued != n {
		t.Fatalf("%d of %d rows issued; summary %+v", issued, n, summary.Summary)
	}
	growth := int64(peak.Load()) - int64(base.HeapInuse)
	t.Logf("%d bundles in %.2f s (%.0f/s); %.0f us of CPU per bundle (server and client, process total); heap in use peaked %d MiB above the start",
		n, elapsed.Seconds(), float64(n)/elapsed.Seconds(), cpu.Seconds()*1e6/n, growth>>20)
	if growth > 32<<20 {
		t.Fatalf("heap grew by %d MiB during the request: rows are being held", growth>>20)
	}
	if got, err := e.st.Devices(ctx, maker.ID, store.DeviceFilter{State: store.DeviceTokenIssued, Limit: 1000}); err != nil || len(got) != 1000 {
		t.Fatalf("devices with a token: %d %v", len(got), err)
	}
}

// processCPU is the user and system CPU time the process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
