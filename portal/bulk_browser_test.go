package portal_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"
	"github.com/credfactory/credfactory/portal"
	"github.com/credfactory/credfactory/store"
)

// TestBrowserBundlesDownload drives chromium through the bundles page as a
// manufacturer at the factory would: log in, open "Bundles", choose a file
// of device IDs, submit, and get the bundles as a downloaded CSV file, each
// of its own devices with a token and another manufacturer's refused.
func TestBrowserBundlesDownload(t *testing.T) {
	requireChromium(t)
	env := newPageEnv(t)
	bg := context.Background()
	maker := env.stakeholder(t, "line-7", store.RoleManufacturer, "correct horse battery staple")
	other := env.stakeholder(t, "line-8", store.RoleManufacturer, "correct horse battery staple")
	for who, text := range map[*store.Stakeholder]string{&maker: "deviceId\nfx-1\nfx-2\n", &other: "deviceId\nfx-other\n"} {
		rows, _ := portal.CSVRows(strings.NewReader(text))
		if _, err := env.portal.Upload(bg, portal.Principal{Stakeholder: *who, Via: "api-key"}, rows); err != nil {
			t.Fatal(err)
		}
	}

	ctx := newBrowser(t, env)
	must := func(step string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
	}

	must("log in", chromedp.Do(ctx,
		chromedp.Navigate(env.base+"/login"),
		chromedp.SendKeys(chromedp.ID("name"), "line-7"),
		chromedp.SendKeys(chromedp.ID("password"), "correct horse battery staple"),
		chromedp.Click(chromedp.ID("login")),
		chromedp.WaitVisible(chromedp.ID("whoami")),
		chromedp.Click(chromedp.CSS(`nav a[href="/bundles"]`)),
		chromedp.WaitVisible(chromedp.ID("bundles-form")),
	))
	h1, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("h1")))
	must("read the title", err)
	if !strings.Contains(h1, "bundles") {
		t.Fatalf("bundles page title %q", h1)
	}

	dir := t.TempDir()
	rowsPath := filepath.Join(t.TempDir(), "line-7.csv")
	must("write rows", os.WriteFile(rowsPath, []byte("deviceId\nfx-1\nfx-2\nfx-other\n"), 0o600))
	progress := chromedp.Events(ctx, browser.DownloadProgress)
	must("download", chromedp.Do(ctx,
		chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
			_, err := chromedp.Call(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
				Behavior: browser.SetDownloadBehaviorBehaviorAllowAndName, DownloadPath: dir, EventsEnabled: ptrTo(true)})
			return err
		}),
		chromedp.SetValue(chromedp.ID("format"), "csv"),
		chromedp.SetUploadFiles(chromedp.ID("file"), []string{rowsPath}),
		chromedp.Click(chromedp.ID("get-bundles")),
	))
	var file string
	for ev, err := range progress {
		must("download progress", err)
		if ev.State == browser.DownloadProgressStateCanceled {
			t.Fatal("the download was cancelled")
		}
		if ev.State == browser.DownloadProgressStateCompleted {
			file = filepath.Join(dir, ev.GUID)
			break
		}
	}
	raw, err := os.ReadFile(file)
	must("read the download", err)
	recs, err := csv.NewReader(bytes.NewReader(raw)).ReadAll()
	if err != nil || len(recs) != 5 {
		t.Fatalf("downloaded bundles: %v %q", err, raw)
	}
	for i, want := range [][3]string{{"fx-1", "issued", ""}, {"fx-2", "issued", ""}, {"fx-other", "refused", "device_not_found"}} {
		r := recs[i+1]
		if r[1] != want[0] || r[2] != want[1] || r[9] != want[2] || (want[1] == "issued") != (r[3] != "" && strings.Contains(r[8], "BEGIN CERTIFICATE")) {
			t.Errorf("row %d: %q, want %v", i+1, r, want)
		}
	}
	if recs[4][0] != "end" || recs[4][2] != "complete" {
		t.Errorf("last record %q", recs[4])
	}
	if d, err := env.st.Device(bg, "fx-1"); err != nil || d.State != store.DeviceTokenIssued {
		t.Fatalf("fx-1 after the download: %v %v", d.State, err)
	}
}

func ptrTo[T any](v T) *T { return &v }
