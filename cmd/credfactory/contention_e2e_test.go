package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credfactory/credfactory/ca"
	"github.com/credfactory/credfactory/client"
	"github.com/credfactory/credfactory/store/storetest"
)

// TestContention: 64 clients, each taking fresh devices through their
// whole life over the real server for 10 s from an empty registry: upload,
// enrolment token (claim code), EST enrolment, EST renewal, revocation.
// Uploads carry eight devices each, at most four at once (the portal's
// cap). Every device is distinct, so nothing they do conflicts in the data: no
// request may be refused for the database's sake (no 5xx, no
// registry_contention), on SQLite and on PostgreSQL, whose serializable
// transactions abort each other over what they share (index pages,
// counters) unless the transactions are built not to. The retries the
// server needed are read from /metrics and reported.
func TestContention(t *testing.T) {
	if testing.Short() {
		t.Skip("10 s of load")
	}
	storetest.Each(t, func(t *testing.T, url string) {
		env := []string{"CREDFACTORY_STORE_URL=" + url, "CREDFACTORY_LOG_LEVEL=warn", "CREDFACTORY_LOG_ACCESS=false",
			"CREDFACTORY_MEF_RENEW_AFTER=0s"}
		// Rate limits would refuse 64 clients of one tenant by design;
		// this measures the registry.
		for _, l := range []string{"ENROL_SOURCE", "ENROL_TENANT", "ENROL_OBF", "TOKEN_TENANT"} {
			env = append(env, "CREDFACTORY_LIMITS_"+l+"_RATE=0")
		}
		s := startSP(t, env...)
		key := s.stakeholder("acme", "manufacturer")
		raw, err := os.ReadFile(filepath.Join(s.dir, "trust-anchor.pem"))
		if err != nil {
			t.Fatal(err)
		}
		anchor, err := ca.ParseCertsPEM(raw)
		if err != nil {
			t.Fatal(err)
		}
		const clients = 64
		var (
			done     [5]atomic.Int64 // per step
			failures sync.Map        // "step status code" -> *atomic.Int64
			seq      atomic.Int64
		)
		fail := func(step string, err error) {
			k := step + " " + err.Error()
			if len(k) > 200 {
				k = k[:200]
			}
			v, _ := failures.LoadOrStore(k, new(atomic.Int64))
			v.(*atomic.Int64).Add(1)
		}
		// Requests run to their end: a client that hangs up mid-request is
		// logged as a failure by the server, which would hide real ones.
		ctx := t.Context()
		deadline := time.Now().Add(10 * time.Second)
		portal := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.roots}, MaxIdleConnsPerHost: clients}}
		api := func(method, path, contentType string, body []byte, out any) error {
			req, _ := http.NewRequestWithContext(ctx, method, s.base+path, bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+key)
			req.Header.Set("Content-Type", contentType)
			resp, err := portal.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode/100 != 2 {
				var e map[string]any
				if err := json.Unmarshal(b, &e); err != nil {
					t.Fatal(err)
				}
				return fmt.Errorf("HTTP %d %s", resp.StatusCode, errCode(e))
			}
			if out != nil {
				return json.Unmarshal(b, out)
			}
			return nil
		}
		anon := client.NewConn(s.base, anchor, nil)
		uploads := make(chan struct{}, 4)
		var wg sync.WaitGroup
		for w := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var ready []string // uploaded, not yet taken through their life
				for time.Now().Before(deadline) {
					if len(ready) == 0 {
						// A batch of devices per upload, at most four
						// uploads at once: the portal parses no more than
						// portal.max_concurrent_uploads (4) together and
						// answers the next 503 uploads_busy by design.
						var csv strings.Builder
						csv.WriteString("deviceId,claimCode\n")
						var batch []string
						for range 8 {
							id := fmt.Sprintf("cont-%02d-%06d", w, seq.Add(1))
							batch = append(batch, id)
							fmt.Fprintf(&csv, "%s,code-%s\n", id, id)
						}
						uploads <- struct{}{}
						err := api("POST", "/api/v1/devices", "text/csv", []byte(csv.String()), nil)
						<-uploads
						if err != nil {
							fail("upload", err)
							continue
						}
						done[0].Add(int64(len(batch)))
						ready = batch
					}
					id := ready[0]
					ready = ready[1:]
					var b client.Bundle
					if err := api("POST", "/api/v1/devices/"+id+"/enrolments", "application/json",
						mustJSON(map[string]any{"proof": map[string]any{"claimCode": "code-" + id}}), &b); err != nil {
						fail("token", err)
						continue
					}
					done[1].Add(1)
					devKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
					csr, err := client.CSR(devKey, b.AssignedID, b.Token)
					if err != nil {
						fail("csr", err)
						continue
					}
					certs, err := anon.ESTEnroll(ctx, csr, false)
					if err != nil {
						fail("enrol", err)
						continue
					}
					done[2].Add(1)
					tc := &tls.Certificate{PrivateKey: devKey, Leaf: certs[0]}
					for _, c := range certs {
						tc.Certificate = append(tc.Certificate, c.Raw)
					}
					renewCSR, err := client.CSR(devKey, b.AssignedID, "")
					if err != nil {
						fail("csr", err)
						continue
					}
					if _, err := client.NewConn(s.base, anchor, tc).ESTEnroll(ctx, renewCSR, true); err != nil {
						fail("renew", err)
						continue
					}
					done[3].Add(1)
					if err := api("POST", "/api/v1/devices/"+id+"/revoke", "application/json", []byte(`{"reason":"cessationOfOperation"}`), nil); err != nil {
						fail("revoke", err)
						continue
					}
					done[4].Add(1)
				}
			}()
		}
		wg.Wait()

		bad := 0
		failures.Range(func(k, v any) bool {
			bad += int(v.(*atomic.Int64).Load())
			t.Errorf("%s: %d times", k, v.(*atomic.Int64).Load())
			return true
		})
		_, metrics := scrapeFamilies(t, s)
		retries, exhausted := sumSeries(metrics, "credfactory_store_transaction_retries_total", ""),
			sumSeries(metrics, "credfactory_store_transaction_errors_total", `kind="retries_exhausted"`)
		tokenRetries := sumSeries(metrics, "credfactory_store_transaction_retries_total", `op="create_enrolment"`)
		t.Logf("%s: in 10 s with %d clients: %d devices uploaded, %d tokens, %d enrolments, %d renewals, %d revocations; "+
			"store retries %v (tokens %v), retries exhausted %v, failed requests %d",
			filepath.Base(t.Name()), clients, done[0].Load(), done[1].Load(), done[2].Load(), done[3].Load(), done[4].Load(),
			retries, tokenRetries, exhausted, bad)
		for _, line := range strings.Split(metrics, "\n") {
			if strings.HasPrefix(line, "credfactory_store_transaction_retries_total{") {
				t.Logf("  %s", line)
			}
		}
		if exhausted != 0 {
			t.Errorf("%v transactions exhausted their retries", exhausted)
		}
		if n := sumSeries(metrics, "credfactory_http_requests_total", `code="5`); n != 0 {
			t.Errorf("the server answered %v requests with 5xx", n)
		}
		if done[4].Load() < clients {
			t.Errorf("only %d devices went through their whole life", done[4].Load())
		}
	})
}

// sumSeries adds the samples of a metric family whose labels contain
// match ("" for all).
func sumSeries(metrics, name, match string) float64 {
	sum := 0.0
	for _, line := range strings.Split(metrics, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		if match != "" && !strings.Contains(line, match) {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}
