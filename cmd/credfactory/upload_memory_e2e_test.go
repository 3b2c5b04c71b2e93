package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/credfactory/credfactory/portal"
)

// lines is a body made one line at a time, never held whole by the test:
// head, then line(i) for i = 0.. until it returns nil, then padding to
// size bytes when size > 0.
type lines struct {
	head []byte
	line func(i int) []byte
	i    int
	size int64
	sent int64
	buf  []byte
	// hold, when set, stops the body after its first line until closed.
	hold chan struct{}
}

func (l *lines) Read(p []byte) (int, error) {
	for len(l.buf) == 0 {
		switch {
		case l.head != nil:
			l.buf, l.head = l.head, nil
		case l.line != nil:
			if l.i == 8 && l.hold != nil {
				<-l.hold
			}
			if b := l.line(l.i); b != nil && (l.size == 0 || l.sent+int64(len(b)) <= l.size) {
				l.buf = b
				l.i++
				break
			}
			l.line = nil
		case l.size > l.sent:
			l.buf = bytes.Repeat([]byte("\n"), int(min(l.size-l.sent, 4096)))
		default:
			return 0, io.EOF
		}
	}
	n := copy(p, l.buf)
	l.buf = l.buf[n:]
	l.sent += int64(n)
	return n, nil
}

// peakRSS is the serve process's high-water mark of resident memory.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc/PID/status")
	return 0
}

// TestUploadMemoryIsBounded sends the uploads that exhausted the host
// before: a million rows, one 100 MB field, and four bodies of the maximum
// size at once (a fifth meanwhile is refused), and holds the server's peak
// resident memory under 256 MiB.
func TestUploadMemoryIsBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("uploads about 1.2 GB")
	}
	s := startSP(t)
	key := s.stakeholder("maker", "manufacturer")
	c := s.client(nil)
	c.Timeout = 10 * time.Minute
	upload := func(body io.Reader, size int64) (int, map[string]any, error) {
		req, _ := http.NewRequest("POST", s.base+"/api/v1/devices", body)
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "text/csv")
		req.ContentLength = size
		resp, err := c.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		var out map[string]any
		raw, _ := io.ReadAll(resp.Body)
		if err := json.Unmarshal(raw, &out); err != nil {
			return resp.StatusCode, nil, fmt.Errorf("not JSON: %.200s", raw)
		}
		return resp.StatusCode, out, nil
	}
	base := peakRSS(t, s.pid)
	t.Logf("serve peak RSS before the uploads: %d MiB", base>>20)

	t.Run("a million rows", func(t *testing.T) {
		const rows = 1_000_000
		status, out, err := upload(&lines{head: []byte("deviceId\n"), line: func(i int) []byte {
			if i == rows {
				return nil
			}
			return fmt.Appendf(nil, "million-%07d\n", i)
		}}, -1)
		if err != nil || status != 200 || out["accepted"] != float64(rows) {
			t.Fatalf("%d %v %v", status, out, err)
		}
	})
	t.Logf("peak RSS after a million rows: %d MiB", peakRSS(t, s.pid)>>20)
	t.Run("a 100 MB field is refused while it is read", func(t *testing.T) {
		const field = 100 << 20
		head := "deviceId,claimCode,deviceCert\nbig-1,big-claim-code-1,\""
		status, out, err := upload(&lines{head: []byte(head), line: func(i int) []byte {
			if i*4096 >= field {
				return nil
			}
			return bytes.Repeat([]byte("A"), 4096)
		}}, -1)
		// The server answers and closes without reading the rest: the
		// client may see the answer or only the closed connection.
		if err == nil && (status != http.StatusRequestEntityTooLarge || errCode(out) != "row_too_large") {
			t.Fatalf("%d %v", status, out)
		}
	})
	t.Logf("peak RSS after the 100 MB field: %d MiB", peakRSS(t, s.pid)>>20)
	t.Run("four maximum-size bodies at once, a fifth refused", func(t *testing.T) {
		hold := make(chan struct{})
		var wg sync.WaitGroup
		results := make([]string, 4)
		for u := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cert := strings.Repeat("Z", 8000)
				status, out, err := upload(&lines{head: []byte("deviceId,claimCode,deviceCert\n"), size: portal.MaxUploadBytes, hold: hold,
					line: func(i int) []byte { return fmt.Appendf(nil, "max%d-%d,,%s\n", u, i, cert) }}, portal.MaxUploadBytes)
				if err != nil || status != 200 {
					results[u] = fmt.Sprintf("upload %d: %d %v %v", u, status, out, err)
				}
			}()
		}
		time.Sleep(2 * time.Second) // the four hold their places
		status, out, err := upload(strings.NewReader("deviceId\nfifth-1\n"), -1)
		close(hold)
		if err != nil || status != http.StatusServiceUnavailable || errCode(out) != "uploads_busy" {
			t.Errorf("a fifth upload while four run: %d %v %v", status, out, err)
		}
		wg.Wait()
		for _, r := range results {
			if r != "" {
				t.Error(r)
			}
		}
	})
	t.Run("a body over the limit is refused before it is read", func(t *testing.T) {
		status, out, err := upload(&lines{head: []byte("deviceId\n"), size: portal.MaxUploadBytes + 1}, portal.MaxUploadBytes+1)
		if err == nil && status != http.StatusRequestEntityTooLarge {
			t.Fatalf("%d %v", status, out)
		}
	})
	peak := peakRSS(t, s.pid)
	t.Logf("serve peak RSS after the uploads: %d MiB", peak>>20)
	if peak >= 256<<20 {
		t.Fatalf("serve peak RSS %d MiB, want under 256 MiB", peak>>20)
	}
}

// TestUploadRoutesCutSlowAnonymousClients: both streamed upload routes of
// the real server answer an anonymous client that trickles a chunked body
// at once and close its connection within the read timeout, instead of
// draining the body under the long upload deadline.
func TestUploadRoutesCutSlowAnonymousClients(t *testing.T) {
	const readTimeout = 2 * time.Second
	s := startSP(t, "CREDFACTORY_SERVER_READ_TIMEOUT="+readTimeout.String())
	for _, r := range []struct{ path, ctype string }{
		{"/api/v1/devices", "text/csv"},
		{"/upload", "multipart/form-data; boundary=b"},
	} {
		t.Run(r.path, func(t *testing.T) {
			conn, err := tls.Dial("tcp", strings.TrimPrefix(s.base, "https://"), &tls.Config{RootCAs: s.roots, ServerName: "localhost"})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			began := time.Now()
			fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: %s\r\nTransfer-Encoding: chunked\r\n\r\n", r.path, r.ctype)
			go func() { // a byte every 300 ms, for up to 30 s
				for range 100 {
					if _, err := io.WriteString(conn, "1\r\nx\r\n"); err != nil {
						return
					}
					time.Sleep(300 * time.Millisecond)
				}
			}()
			_ = conn.SetReadDeadline(began.Add(30 * time.Second))
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401", resp.StatusCode)
			}
			if _, err := io.Copy(io.Discard, br); err != nil {
				t.Fatalf("connection still open after %v: %v", time.Since(began).Round(time.Millisecond), err)
			}
			if took := time.Since(began); took > readTimeout+time.Second {
				t.Fatalf("closed after %v, want within the read timeout (%v)", took, readTimeout)
			}
		})
	}
}
