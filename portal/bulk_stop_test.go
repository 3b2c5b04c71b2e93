package portal_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/credfactory/credfactory/portal"
	"github.com/credfactory/credfactory/store"
)

// TestBulkBrokenBodyStopsAtAChunk: a body that breaks at row 1,200 gets
// the first chunk's thousand answers and an incomplete summary; the chunk
// it broke in writes nothing; the retry with the same batch ID and the
// fixed body replays the first chunk's tokens and carries on.
func TestBulkBrokenBodyStopsAtAChunk(t *testing.T) {
	e := newPageEnv(t)
	ctx := context.Background()
	maker := e.stakeholder(t, "stop-line", store.RoleManufacturer, "correct horse battery staple")
	who := portal.Principal{Stakeholder: maker, Via: "session"}
	var csvText strings.Builder
	csvText.WriteString("deviceId\n")
	for i := 1; i <= 1500; i++ {
		fmt.Fprintf(&csvText, "stop-%04d\n", i)
	}
	rows, _ := portal.CSVRows(strings.NewReader(csvText.String()))
	if _, err := e.portal.Upload(ctx, who, rows); err != nil {
		t.Fatal(err)
	}
	key, _, err := e.portal.NewAPIKey(ctx, who, "stop")
	if err != nil {
		t.Fatal(err)
	}
	send := func(broken bool) (map[int]portal.BulkResult, portal.BulkSummary) {
		t.Helper()
		var body strings.Builder
		for i := 1; i <= 1500; i++ {
			if broken && i == 1200 {
				body.WriteString("{\"deviceId\": \"stop-1200\"\n") // not JSON: the stream is broken here
				continue
			}
			fmt.Fprintf(&body, "{\"deviceId\":\"stop-%04d\"}\n", i)
		}
		out, _ := postBundles(t, e.base, e.root, key, "stop-batch", body.String())
		byRow := map[int]portal.BulkResult{}
		for _, r := range out.Results {
			byRow[r.Row] = r
		}
		return byRow, out.Summary
	}

	first, sum := send(true)
	if len(first) != 1000 || sum.Complete || sum.Rows != 1000 || sum.Error == nil || sum.Error.Code != "bad_rows" {
		t.Fatalf("broken body: %d results, summary %+v", len(first), sum)
	}
	for _, id := range []string{"stop-1001", "stop-1199", "stop-1500"} {
		if d, _ := e.st.Device(ctx, id); d.State != store.DevicePreEnrolled {
			t.Fatalf("%s is %s after the chunk it was in broke", id, d.State)
		}
	}
	again, sum := send(false)
	if len(again) != 1500 || !sum.Complete || sum.Replayed != 1000 || sum.Issued != 500 {
		t.Fatalf("retry: %d results, summary %+v", len(again), sum)
	}
	if again[1].Token != first[1].Token || again[1000].Token != first[1000].Token || again[1001].Status != portal.BulkIssued {
		t.Fatalf("retry rows: %+v %+v %+v", again[1], again[1000], again[1001])
	}
}

// bulkAnswer is the JSON answer of POST /api/v1/bundles.
type bulkAnswer struct {
	Results []portal.BulkResult `json:"results"`
	Summary portal.BulkSummary  `json:"summary"`
}

// postBundles posts NDJSON rows to /api/v1/bundles as batch with an API key,
// over TLS trusting root, and decodes the JSON answer (raw for messages).
func postBundles(t *testing.T, base string, root *x509.Certificate, key, batch, ndjson string) (bulkAnswer, []byte) {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(root)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	req, _ := http.NewRequest("POST", base+"/api/v1/bundles", strings.NewReader(ndjson))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/x-ndjson")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Idempotency-Key", batch)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out bulkAnswer
	if resp.StatusCode != 200 || json.Unmarshal(raw, &out) != nil {
		t.Fatalf("POST /api/v1/bundles: %d %.500s", resp.StatusCode, raw)
	}
	return out, raw
}
