package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/credfactory/credfactory/client"
	"github.com/credfactory/credfactory/portal"
)

// bulkRow is one line of a bulk answer (NDJSON), or its summary.
type bulkLine struct {
	Row      int    `json:"row"`
	DeviceID string `json:"deviceId"`
	Status   string `json:"status"`
	Token    string `json:"token"`
	Assigned string `json:"assignedId"`
	Anchor   string `json:"trustAnchor"`
	Error    *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	Summary *struct {
		Rows, Issued, Replayed, Refused int
		Complete                        bool
	} `json:"summary"`
}

// bulk posts NDJSON rows to /api/v1/bundles and reads the NDJSON answer.
func (s *sp) bulk(key, batchID, query string, rows ...map[string]any) (int, []bulkLine, map[string]any) {
	s.t.Helper()
	var body bytes.Buffer
	for _, r := range rows {
		body.Write(mustJSON(r))
		body.WriteByte('\n')
	}
	req, _ := http.NewRequest("POST", s.base+"/api/v1/bundles"+query, &body)
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/x-ndjson")
	req.Header.Set("Accept", "application/x-ndjson")
	if batchID != "" {
		req.Header.Set("Idempotency-Key", batchID)
	}
	resp, err := s.client(nil).Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		var e map[string]any
		_ = json.Unmarshal(raw, &e) // a body that is not JSON leaves e nil: the status says enough
		return resp.StatusCode, nil, e
	}
	var out []bulkLine
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l bulkLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			s.t.Fatalf("bulk answer line %q: %v", sc.Text(), err)
		}
		out = append(out, l)
	}
	if len(out) == 0 || out[len(out)-1].Summary == nil {
		s.t.Fatalf("bulk answer without a summary: %s", raw)
	}
	return resp.StatusCode, out, nil
}

func row(id string, claimCode string) map[string]any {
	r := map[string]any{"deviceId": id}
	if claimCode != "" {
		r["proof"] = map[string]any{"claimCode": claimCode}
	}
	return r
}

// want checks each row's status and error code ("" for none).
func wantRows(t *testing.T, lines []bulkLine, want ...[2]string) {
	t.Helper()
	if len(lines) != len(want)+1 {
		t.Fatalf("%d answer lines, want %d rows and a summary: %+v", len(lines), len(want), lines)
	}
	for i, w := range want {
		l := lines[i]
		code := ""
		if l.Error != nil {
			code = l.Error.Code
		}
		if l.Row != i+1 || l.Status != w[0] || code != w[1] {
			t.Errorf("row %d: %d %s %q (%+v), want %s %q", i+1, l.Row, l.Status, code, l.Error, w[0], w[1])
		}
		if (l.Status == "issued" || l.Status == "replayed") && (l.Token == "" || l.Assigned == "" || l.Anchor == "") {
			t.Errorf("row %d: %s without a complete bundle: %+v", i+1, l.Status, l)
		}
	}
	if !lines[len(lines)-1].Summary.Complete {
		t.Errorf("summary not complete: %+v", lines[len(lines)-1].Summary)
	}
}

// TestBulkBundles tries the bulk route as its users and as an attacker
// would, on both registry backends: another tenant's and unknown devices
// answer alike, duplicates and bad rows are refused alone, a retry with the
// same batch ID replays the open tokens and never issues a second set, the
// same ID with other rows writes nothing, and the tokens work over EST.
func TestBulkBundles(t *testing.T) {
	onBothBackends(t, func(t *testing.T, _ string, env []string) {
		testBulkBundles(t, startSP(t, env...))
	})
}

func testBulkBundles(t *testing.T, s *sp) {
	acme := s.stakeholder("acme", "manufacturer")
	other := s.stakeholder("other", "manufacturer")
	alice := s.stakeholder("alice", "subscriber")
	carol := s.stakeholder("carol", "subscriber")
	upload := func(key, csvText string) {
		t.Helper()
		if status, body := s.call(key, "POST", "/api/v1/devices", "text/csv", []byte(csvText)); status != 200 || body["accepted"].(float64) == 0 {
			t.Fatalf("upload: %d %v", status, body)
		}
	}
	upload(acme, "deviceId,claimCode\nb-1,code-b-1\nb-2,code-b-2\nb-3,code-b-3\nb-4,code-b-4\nb-5,code-b-5\nb-6,code-b-6\n")
	upload(other, "deviceId,claimCode\no-1,code-o-1\n")

	// The manufacturer at the factory: its own devices need no proof;
	// another manufacturer's device is not found, word for word as a
	// device that does not exist.
	_, first, _ := s.bulk(acme, "factory-1", "", row("b-1", ""), row("b-2", ""), row("o-1", ""), row("nope-1", ""), row("b-1", ""), row("bad id!", ""))
	wantRows(t, first, [2]string{"issued", ""}, [2]string{"issued", ""}, [2]string{"refused", "device_not_found"},
		[2]string{"refused", "device_not_found"}, [2]string{"refused", "duplicate_device"}, [2]string{"refused", "bad_device_id"})
	if *first[2].Error != *first[3].Error {
		t.Errorf("another tenant's device (%+v) answers unlike a missing one (%+v)", first[2].Error, first[3].Error)
	}
	if status, d := s.call(other, "GET", "/api/v1/devices/o-1", "", nil); status != 200 || d["state"] != "pre-enrolled" {
		t.Fatalf("the other manufacturer's device changed: %d %v", status, d)
	}

	// b-1's token works over EST.
	conn := client.NewConn(s.base, nil, nil)
	conn.HTTP = s.client(nil)
	enrol := func(token, assigned string) error {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		csr, err := client.CSR(key, assigned, token)
		if err != nil {
			t.Fatal(err)
		}
		_, err = conn.ESTEnroll(context.Background(), csr, false)
		return err
	}
	if err := enrol(first[0].Token, first[0].Assigned); err != nil {
		t.Fatalf("enrol with a bulk token: %v", err)
	}

	// A retry after a lost answer: the redeemed token is not reissued, the
	// open one comes back unchanged, and nothing new is live: the first
	// answer's token for b-2 still works after the retry.
	_, retry, _ := s.bulk(acme, "factory-1", "", row("b-1", ""), row("b-2", ""), row("o-1", ""), row("nope-1", ""), row("b-1", ""), row("bad id!", ""))
	wantRows(t, retry, [2]string{"refused", "token_redeemed"}, [2]string{"replayed", ""}, [2]string{"refused", "device_not_found"},
		[2]string{"refused", "device_not_found"}, [2]string{"refused", "duplicate_device"}, [2]string{"refused", "bad_device_id"})
	if retry[1].Token != first[1].Token || retry[1].Assigned != first[1].Assigned {
		t.Fatalf("the retry answered b-2 with another bundle")
	}

	// The same batch ID with other rows: refused whole, nothing written.
	_, reused, _ := s.bulk(acme, "factory-1", "", row("b-3", ""), row("b-2", ""))
	wantRows(t, reused, [2]string{"refused", "idempotency_key_reused"}, [2]string{"refused", "idempotency_key_reused"})
	if _, d := s.call(acme, "GET", "/api/v1/devices/b-3", "", nil); d["state"] != "pre-enrolled" {
		t.Fatalf("a refused batch wrote b-3: %v", d)
	}
	// ...and with other parameters (an assigned ID type) as well.
	_, reused, _ = s.bulk(acme, "factory-1", "?assignedIdType=cse", row("b-1", ""), row("b-2", ""), row("o-1", ""), row("nope-1", ""), row("b-1", ""), row("bad id!", ""))
	if reused[1].Error == nil || reused[1].Error.Code != "idempotency_key_reused" {
		t.Fatalf("same batch ID, other parameters: %+v", reused[1])
	}
	if err := enrol(first[1].Token, first[1].Assigned); err != nil {
		t.Fatalf("the first answer's b-2 token after the retries: %v", err)
	}

	// A claimant: alice holds b-3 and b-4 (handed over); b-5 was never
	// handed over or released, so its label's code gets her nothing.
	if status, body := s.call(acme, "POST", "/api/v1/handovers", "application/json", mustJSON(map[string]any{"subscriber": "alice", "deviceIds": []string{"b-3", "b-4"}})); status != 200 {
		t.Fatalf("hand over: %d %v", status, body)
	}
	_, claims, _ := s.bulk(alice, "alice-1", "", row("b-3", "wrong-code"), row("b-4", "code-b-4"), row("b-5", "code-b-5"),
		row("o-1", "code-o-1"), row("b-4", ""), map[string]any{"deviceId": "b-6", "proof": map[string]any{"vouch": true}})
	wantRows(t, claims, [2]string{"refused", "wrong_claim_code"}, [2]string{"issued", ""}, [2]string{"refused", "device_not_found"},
		[2]string{"refused", "device_not_found"}, [2]string{"refused", "duplicate_device"}, [2]string{"refused", "bad_proof"})
	_, claims, _ = s.bulk(alice, "alice-2", "", row("b-3", ""))
	wantRows(t, claims, [2]string{"refused", "proof_required"})
	// The manufacturer cannot take back what it handed over.
	_, back, _ := s.bulk(acme, "factory-2", "", row("b-4", ""))
	wantRows(t, back, [2]string{"refused", "device_not_found"})

	// Whole-request refusals: no batch ID, a disabled account, a huge body,
	// a media type the route does not read.
	if status, _, body := s.bulk(acme, "", "", row("b-5", "")); status != 400 || errCode(body) != "bad_idempotency_key" {
		t.Fatalf("no batch ID: %d %v", status, body)
	}
	readOnly := strings.TrimSpace(s.cli("admin", "create-api-key", "--stakeholder", "acme", "--scope", "read"))
	if status, _, body := s.bulk(readOnly, "factory-ro", "", row("b-5", "")); status != 403 || errCode(body) != "scope_missing" {
		t.Fatalf("a key without the enrol scope: %d %v", status, body)
	}
	root := s.stakeholder("root", "sp-admin")
	if status, _, body := s.bulk(root, "root-1", "", row("b-5", "")); status != 403 || errCode(body) != "forbidden" {
		t.Fatalf("an sp-admin asks for tokens: %d %v", status, body)
	}
	if status, _, body := s.bulk(acme, "factory-obf", "?obfId=no-such-obf", row("b-5", "")); status != 404 || errCode(body) != "unknown_obf" {
		t.Fatalf("an unknown OBF: %d %v", status, body)
	}
	s.cli("admin", "disable-stakeholder", "--name", "carol")
	if status, _, body := s.bulk(carol, "carol-1", "", row("b-5", "code-b-5")); status != 401 || errCode(body) != "stakeholder_disabled" {
		t.Fatalf("disabled stakeholder: %d %v", status, body)
	}
	if status, body := s.call(acme, "POST", "/api/v1/bundles", "application/xml", []byte("<x/>")); status != 415 {
		t.Fatalf("XML body: %d %v", status, body)
	}
	if got := hugeBulk(t, s, acme); !strings.HasPrefix(got, "HTTP/1.1 413") {
		t.Fatalf("a body over the limit: %q", got)
	}

	// CSV in, CSV out (the portal page's format).
	req, _ := http.NewRequest("POST", s.base+"/api/v1/bundles", strings.NewReader("deviceId\nb-5\nb-6\n"))
	req.Header.Set("Authorization", "Bearer "+acme)
	req.Header.Set("Content-Type", "text/csv")
	req.Header.Set("Accept", "text/csv")
	req.Header.Set("Idempotency-Key", "factory-csv")
	resp, err := s.client(nil).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(resp.Body).ReadAll()
	resp.Body.Close()
	if err != nil || len(recs) != 4 || recs[1][2] != "issued" || recs[2][2] != "issued" || recs[3][0] != "end" || recs[3][2] != "complete" {
		t.Fatalf("CSV answer: %v %q", err, recs)
	}
	if recs[1][3] == "" || !strings.Contains(recs[1][8], "BEGIN CERTIFICATE") {
		t.Fatalf("CSV bundle incomplete: %q", recs[1])
	}
}

// hugeBulk declares a body over the route's limit and returns the status
// line the server answers with before reading any of it.
func hugeBulk(t *testing.T, s *sp, key string) string {
	t.Helper()
	c, err := tls.Dial("tcp", strings.TrimPrefix(s.base, "https://"), &tls.Config{RootCAs: s.roots, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /api/v1/bundles HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer %s\r\nIdempotency-Key: huge\r\n"+
		"Content-Type: text/csv\r\nContent-Length: %d\r\n\r\ndeviceId\n", key, portal.MaxBulkBytes+1)
	// Keep sending while waiting: the answer must come long before the
	// declared length is reached.
	go func() {
		chunk := bytes.Repeat([]byte("device-xxxxxxxxxxxxxxxx\n"), 1<<14)
		for sent := 0; sent < 64<<20; sent += len(chunk) {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	}()
	line, _ := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line)
}

// TestBulkBundlesRateLimit: token_tenant charges a bulk request per row,
// from the same budget as the single route: a batch larger than the burst
// passes once and then the tenant waits for all of it, on either route.
func TestBulkBundlesRateLimit(t *testing.T) {
	s := startSP(t, "CREDFACTORY_LIMITS_TOKEN_TENANT_RATE=0.001", "CREDFACTORY_LIMITS_TOKEN_TENANT_BURST=3")
	acme := s.stakeholder("acme", "manufacturer")
	if status, body := s.call(acme, "POST", "/api/v1/devices", "text/csv", []byte("deviceId,claimCode\nr-1,code-r-1\nr-2,code-r-2\nr-3,code-r-3\nr-4,code-r-4\nr-5,code-r-5\nr-6,code-r-6\n")); status != 200 {
		t.Fatalf("upload: %d %v", status, body)
	}
	_, lines, _ := s.bulk(acme, "rl-1", "", row("r-1", ""), row("r-2", ""), row("r-3", ""), row("r-4", ""), row("r-5", ""))
	wantRows(t, lines, [2]string{"issued", ""}, [2]string{"issued", ""}, [2]string{"issued", ""}, [2]string{"issued", ""}, [2]string{"issued", ""})
	if status, _, body := s.bulk(acme, "rl-2", "", row("r-6", "")); status != 429 || errCode(body) != "rate_limited" {
		t.Fatalf("a bulk request after a batch over the burst: %d %v", status, body)
	}
	if status, body := s.call(acme, "POST", "/api/v1/devices/r-6/enrolments", "application/json", mustJSON(map[string]any{"proof": map[string]any{"claimCode": "code-r-6"}})); status != 429 {
		t.Fatalf("the single route after the bulk batch: %d %v", status, body)
	}
	if _, d := s.call(acme, "GET", "/api/v1/devices/r-6", "", nil); d["state"] != "pre-enrolled" {
		t.Fatalf("a refused request changed r-6: %v", d)
	}
}
