package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/credfactory/credfactory/client"
)

// PathFactory is the factory line end to end (Runner.Factory).
const PathFactory = "factory"

// Phase is one timed phase of a factory run.
type Phase struct {
	Name    string  `json:"name"`
	Items   int     `json:"items"`
	Seconds float64 `json:"seconds"`
	Errors  int     `json:"errors,omitempty"`
}

// PerSecond is the phase's rate.
func (p Phase) PerSecond() float64 {
	if p.Seconds == 0 {
		return 0
	}
	return float64(p.Items) / p.Seconds
}

// Factory runs a factory line for n devices, the way a manufacturer and
// its line would: the device list uploaded as one CSV (POST
// /api/v1/devices), every device's bundle taken in one bulk request (POST
// /api/v1/bundles, the manufacturer's own devices need no proof), and
// every device enrolled over EST by clients concurrent clients. Each phase
// is timed and printed; the Result it returns counts the enrolments for
// Verify, which the caller runs next.
func (r *Runner) Factory(ctx context.Context, n, clients int) ([]Phase, Result, error) {
	var phases []Phase
	run := r.nextID.Add(1)
	id := func(i int) string { return fmt.Sprintf("bench-f%d-%d-%07d", time.Now().Unix()%100000, run, i) }
	ids := make([]string, n)
	for i := range ids {
		ids[i] = id(i)
	}
	// Streaming requests may take longer than the connection's default
	// request timeout; the transport (and its connections) is shared.
	stream := &http.Client{Transport: r.conn.HTTP.Transport}
	phase := func(name string, items, errs int, start time.Time) {
		p := Phase{Name: name, Items: items, Seconds: time.Since(start).Seconds(), Errors: errs}
		phases = append(phases, p)
		fmt.Fprintf(r.out, "  factory %-8s %7d in %6.2f s  %8.0f/s  errors %d\n", name, p.Items, p.Seconds, p.PerSecond(), errs)
	}

	// The device list, as both the upload and the bulk request send it.
	deviceList := func(w io.Writer) error {
		bw := bufio.NewWriter(w)
		bw.WriteString("deviceId\n")
		for _, d := range ids {
			bw.WriteString(d)
			bw.WriteByte('\n')
		}
		return bw.Flush()
	}

	// 1. Upload the device list.
	start := time.Now()
	var report struct {
		Accepted int `json:"accepted"`
		Rejected []struct {
			Row   int    `json:"row"`
			Error string `json:"error"`
		} `json:"rejected"`
	}
	if err := r.streamPost(ctx, stream, "/api/v1/devices", "text/csv", "", nil, deviceList,
		func(body io.Reader) error { return json.NewDecoder(body).Decode(&report) }); err != nil {
		return phases, Result{}, fmt.Errorf("factory upload: %w", err)
	}
	if report.Accepted != n {
		return phases, Result{}, fmt.Errorf("factory upload: %d of %d devices accepted (%v)", report.Accepted, n, report.Rejected)
	}
	phase("upload", n, 0, start)

	// 2. Every bundle in one bulk request, read as it streams back.
	start = time.Now()
	type bundle struct {
		Row        int    `json:"row"`
		Status     string `json:"status"`
		Token      string `json:"token"`
		AssignedID string `json:"assignedId"`
		Error      *struct {
			Code string `json:"code"`
		} `json:"error"`
		Summary *struct {
			Complete bool `json:"complete"`
		} `json:"summary"`
	}
	bundles := make([]bundle, n)
	bulkErrs := map[string]int{}
	complete := false
	batchID := fmt.Sprintf("bench-factory-%d-%d", time.Now().UnixNano(), run)
	if err := r.streamPost(ctx, stream, "/api/v1/bundles", "text/csv", "application/x-ndjson",
		map[string]string{"Idempotency-Key": batchID}, deviceList, func(body io.Reader) error {
			sc := bufio.NewScanner(body)
			sc.Buffer(make([]byte, 64<<10), 1<<20)
			for sc.Scan() {
				var b bundle
				if err := json.Unmarshal(sc.Bytes(), &b); err != nil {
					return fmt.Errorf("bulk answer: %w", err)
				}
				switch {
				case b.Summary != nil:
					complete = b.Summary.Complete
				case b.Row < 1 || b.Row > n:
					return fmt.Errorf("bulk answer: row %d of %d", b.Row, n)
				case b.Error != nil:
					bulkErrs[b.Error.Code]++
				default:
					b.Summary = nil
					bundles[b.Row-1] = b
				}
			}
			return sc.Err()
		}); err != nil {
		return phases, Result{}, fmt.Errorf("factory bundles: %w", err)
	}
	if !complete || len(bulkErrs) > 0 {
		return phases, Result{}, fmt.Errorf("factory bundles: complete %v, refused rows by code %v", complete, bulkErrs)
	}
	phase("bundles", n, 0, start)

	// 3. Every device enrols over EST: its own key, a CSR with the token.
	start = time.Now()
	res := Result{Path: PathFactory, Concurrency: clients, Errors: map[string]int{}}
	var next, done atomic.Int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := 0; w < clients; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs := map[string]int{}
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					break
				}
				b := bundles[i]
				csr, err := client.CSR(newKey(), b.AssignedID, b.Token)
				if err == nil {
					certs, err := r.conn.ESTEnroll(ctx, csr, false)
					if err == nil {
						r.led.cert(certs[0].Raw)
						done.Add(1)
						continue
					}
				}
				errs[code(err)]++
			}
			mu.Lock()
			for k, v := range errs {
				res.Errors[k] += v
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.Enrolments = int(done.Load())
	res.Seconds = time.Since(start).Seconds()
	res.PerSecond = float64(res.Enrolments) / res.Seconds
	phase("est", res.Enrolments, res.ErrorCount(), start)
	if res.ErrorCount() > 0 {
		return phases, res, fmt.Errorf("factory EST: errors by code %v", res.Errors)
	}
	return phases, res, nil
}

// streamPost sends a body produced by write while reading the answer with
// read, as the bulk routes expect (they answer while the body still comes).
func (r *Runner) streamPost(ctx context.Context, c *http.Client, path, contentType, accept string, hdr map[string]string,
	write func(io.Writer) error, read func(io.Reader) error) error {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(write(pw)) }()
	req, err := http.NewRequestWithContext(ctx, "POST", r.t.Base+path, pr)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Authorization", "Bearer "+r.t.ManufacturerKey)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		pr.CloseWithError(err)
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		pr.CloseWithError(fmt.Errorf("HTTP %d", resp.StatusCode))
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, raw)
	}
	return read(resp.Body)
}
