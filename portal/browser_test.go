package portal_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/credfactory/credfactory/store"
	"github.com/skip2/go-qrcode"
)

// browserChromiumPath is Debian's chromium (make deps-test installs it).
const browserChromiumPath = "/usr/bin/chromium"

// requireChromium skips a browser test without chromium, except under CI,
// where its absence fails the test.
func requireChromium(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(browserChromiumPath); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("chromium is required under CI: %v (make deps-test installs it)", err)
		}
		t.Skipf("chromium is not installed (%v): make deps-test installs it", err)
	}
}

// newBrowser starts headless chromium that trusts exactly env's server key
// and returns a context for chromedp actions (90 s), torn down when the test
// ends; chromium's output is logged if the test failed.
func newBrowser(t *testing.T, env *pageEnv, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	var chromeLog bytes.Buffer
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browserChromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox, // the tests run as root
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		// The machine has no network beyond loopback: no background
		// fetches, updates or sync that would fail and slow the start.
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		// Chromium has no flag to trust one extra root CA, and
		// --ignore-certificate-errors would accept any certificate. This
		// pins exactly the test server's key: a certificate with another
		// key still fails, so TLS is really checked against our server.
		chromedp.Flag("ignore-certificate-errors-spki-list", env.serverSPKI),
		chromedp.CombinedOutput(&chromeLog),
	)
	opts = append(opts, extra...)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	ctx, cancel := context.WithTimeout(bctx, 90*time.Second)
	t.Cleanup(func() {
		cancel()
		cancelBrowser()
		cancelAlloc()
		if t.Failed() && chromeLog.Len() > 0 {
			t.Logf("chromium output:\n%s", chromeLog.String())
		}
	})
	return ctx
}

// TestBrowserEnrolment drives Debian's chromium, headless, through the
// portal as a manufacturer would use it: log in, upload a CSV of devices,
// read the report, open a device, enrol it with its claim code, read the
// bundle and its QR code, log out. Each step checks what the page shows and
// leaves a screenshot (CREDFACTORY_ARTIFACTS, else a temp dir).
func TestBrowserEnrolment(t *testing.T) {
	requireChromium(t)
	start := time.Now()
	env := newPageEnv(t)
	env.stakeholder(t, "acme-factory", store.RoleManufacturer, "correct horse battery staple")

	artifacts := os.Getenv("CREDFACTORY_ARTIFACTS")
	if artifacts == "" {
		artifacts = t.TempDir()
	} else if err := os.MkdirAll(artifacts, 0o755); err != nil {
		t.Fatal(err)
	}

	ctx := newBrowser(t, env, chromedp.WindowSize(1280, 1000))

	must := func(step string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		must("read "+sel, err)
		return strings.TrimSpace(s)
	}
	location := func() string {
		t.Helper()
		loc, err := chromedp.Run(ctx, chromedp.Location())
		must("location", err)
		return loc
	}
	// submit clicks a button and waits for the page it leads to; it
	// returns that page's HTTP status.
	submit := func(sel string) int64 {
		t.Helper()
		resp, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(sel)))
		must("submit "+sel, err)
		return resp.Status
	}
	navigate := func(url string) int64 {
		t.Helper()
		resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(url))
		must("navigate "+url, err)
		return resp.Status
	}
	shot := 0
	screenshot := func(name string) {
		t.Helper()
		buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100 is PNG; less is JPEG
		must("screenshot "+name, err)
		shot++
		path := filepath.Join(artifacts, fmt.Sprintf("browser-%02d-%s.png", shot, name))
		must("write screenshot", os.WriteFile(path, buf, 0o644))
		t.Logf("screenshot: %s", path)
	}
	wantText := func(sel, want string) {
		t.Helper()
		if got := text(sel); !strings.Contains(got, want) {
			t.Fatalf("%s shows %q, want it to contain %q (page %s)", sel, got, want, location())
		}
	}

	// 1. Without a session every page leads to the login form.
	if status := navigate(env.base + "/devices"); status != http.StatusOK || location() != env.base+"/login" {
		t.Fatalf("/devices without a session: status %d at %s, want the login page", status, location())
	}
	wantText("h1", "Log in")
	// The stylesheet loaded under the Content-Security-Policy.
	bg, err := chromedp.Run(ctx, chromedp.Evaluate[string](`getComputedStyle(document.querySelector("header.top")).backgroundColor`))
	must("computed style", err)
	if bg != "rgb(23, 50, 79)" {
		t.Errorf("header background %q: the stylesheet did not load", bg)
	}
	screenshot("login")

	// 2. A wrong password: the form says so, with 401, and sets no session.
	must("type", chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.ID("name"), "acme-factory"),
		chromedp.SendKeys(chromedp.ID("password"), "wrong password")))
	if status := submit("#login"); status != http.StatusUnauthorized {
		t.Fatalf("wrong password: status %d, want 401", status)
	}
	wantText("#error", "Wrong name or password.")
	if v, err := chromedp.Run(ctx, chromedp.Value(chromedp.ID("name"))); err != nil || v != "acme-factory" {
		t.Errorf("the name field was not kept: %q %v", v, err)
	}
	screenshot("login-wrong-password")

	// 3. The right password leads to the (empty) device list.
	// The password field comes back empty: the page never echoes it.
	must("type", chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("password"), "correct horse battery staple")))
	if status := submit("#login"); status != http.StatusOK || location() != env.base+"/devices" {
		t.Fatalf("login: status %d at %s", status, location())
	}
	wantText("h1", "Devices")
	wantText("#whoami", "acme-factory")
	wantText("#no-devices", "No devices yet.")
	screenshot("devices-empty")

	// 4. Upload a CSV: four good rows (one twice), one bad device ID.
	codes := map[string]string{"lamp-0001": "LBL-7Q2W-9XK4", "lamp-0002": "LBL-3M8D-1ZP6", "lamp-0003": "LBL-5T1R-8NC2", "meter-0001": "MTR-0C4H-6YB9"}
	csv := "deviceId,claimCode,deviceCert\n" +
		"lamp-0001," + codes["lamp-0001"] + ",\n" +
		"lamp-0002," + codes["lamp-0002"] + ",\n" +
		"bad id!,LBL-0000-0000,\n" +
		"lamp-0003," + codes["lamp-0003"] + ",\n" +
		"meter-0001," + codes["meter-0001"] + ",\n" +
		"lamp-0001," + codes["lamp-0001"] + ",\n"
	csvPath := filepath.Join(t.TempDir(), "line-3-batch-17.csv")
	must("write CSV", os.WriteFile(csvPath, []byte(csv), 0o600))
	must("open upload", chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`nav a[href="/upload"]`)), chromedp.WaitVisible(chromedp.ID("upload-form"))))
	wantText("h1", "Upload devices")
	must("choose file", chromedp.Do(ctx,
		chromedp.SetValue(chromedp.ID("format"), "csv"),
		chromedp.SetUploadFiles(chromedp.ID("file"), []string{csvPath})))
	if status := submit("#upload"); status != http.StatusOK {
		t.Fatalf("upload: status %d: %s", status, text("main"))
	}
	wantText("#notice", "line-3-batch-17.csv")
	for sel, want := range map[string]string{"#accepted": "4", "#inserted": "4", "#unchanged": "0", "#rejected-count": "2"} {
		if got := text(sel); got != want {
			t.Errorf("report %s = %q, want %q", sel, got, want)
		}
	}
	rejected := text("#rejected")
	for _, want := range []string{"3\tbad id!\tdeviceId must be", "6\tlamp-0001\tduplicate of row 1"} {
		if !strings.Contains(rejected, want) {
			t.Errorf("rejected rows %q lack %q", rejected, want)
		}
	}
	screenshot("upload-report")

	// 5. The list shows the devices, pre-enrolled; the search narrows it.
	navigate(env.base + "/devices")
	list := text("#devices")
	for id := range codes {
		if !strings.Contains(list, id+"\tpre-enrolled") {
			t.Errorf("device list %q lacks %s as pre-enrolled", list, id)
		}
	}
	must("search", chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("prefix"), "lamp-")))
	submit("#search")
	if list := text("#devices"); strings.Contains(list, "meter-0001") || strings.Count(list, "lamp-") != 3 {
		t.Errorf("search lamp-: %q", list)
	}
	screenshot("devices-search")

	// 6. Open a device.
	must("open device", chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#devices a[href^="/devices/lamp-0002@"]`)),
		chromedp.WaitVisible(chromedp.ID("device-id"))))
	wantText("#device-id", "lamp-0002")
	wantText("#device-state", "pre-enrolled")
	wantText("#no-enrolments", "No enrolment tokens issued.")
	wantText("#no-credentials", "No credentials yet.")
	screenshot("device")

	// 7. Another device's claim code: 403, the page says why, no token.
	must("type claim code", chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("claim-code"), codes["lamp-0003"])))
	if status := submit("#enrol-submit"); status != http.StatusForbidden {
		t.Fatalf("another device's claim code: status %d, want 403", status)
	}
	wantText("#error", "not this device's claim code")
	wantText("#device-state", "pre-enrolled")
	if es, err := env.st.Enrolments(context.Background(), "lamp-0002"); err != nil || len(es) != 0 {
		t.Fatalf("enrolments after a wrong claim code: %v %v", es, err)
	}
	screenshot("enrol-wrong-claim-code")

	// 8. The right claim code, for the stakeholder's own OBD: the bundle.
	// The claim code field comes back empty; the OBF stays "my own OBD".
	must("type claim code", chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("claim-code"), codes["lamp-0002"])))
	if obf, err := chromedp.Run(ctx, chromedp.Value(chromedp.ID("obf"))); err != nil || obf != "" {
		t.Fatalf("OBF choice %q %v, want my own OBD", obf, err)
	}
	if status := submit("#enrol-submit"); status != http.StatusOK {
		t.Fatalf("enrol: status %d: %s", status, text("main"))
	}
	wantText("h1", "Enrolment bundle")
	wantText("#once", "shown once")
	token, assigned := text("#bundle-token"), text("#bundle-assigned-id")
	if !regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`).MatchString(token) {
		t.Errorf("token %q is not 256 bits base64url", token)
	}
	if !regexp.MustCompile(`^S[a-z2-7]{26}$`).MatchString(assigned) {
		t.Errorf("assigned ID %q is not an SP-relative AE-ID", assigned)
	}
	if got := text("#bundle-mef-uri"); got != env.mefURI {
		t.Errorf("MEF URI %q, want %q", got, env.mefURI)
	}
	fp := sha256.Sum256(env.root.Raw)
	if got := text("#bundle-ta-sha256"); got != hex.EncodeToString(fp[:]) {
		t.Errorf("trust anchor fingerprint %q, want %x", got, fp)
	}
	if expires := text("#bundle-expires"); !strings.HasSuffix(expires, "UTC") {
		t.Errorf("expiry %q", expires)
	}
	bundleJSON, err := chromedp.Run(ctx, chromedp.TextContent(chromedp.ID("bundle-json")))
	must("bundle JSON", err)
	var bundle struct {
		Token, AssignedID, MEFURI, TrustAnchor, TrustAnchorSHA256 string
		ExpiresAt                                                 time.Time
	}
	if err := json.Unmarshal([]byte(bundleJSON), &bundle); err != nil {
		t.Fatalf("bundle JSON %q: %v", bundleJSON, err)
	}
	if bundle.Token != token || bundle.AssignedID != assigned || bundle.MEFURI != env.mefURI ||
		bundle.TrustAnchorSHA256 != hex.EncodeToString(fp[:]) || !strings.Contains(bundle.TrustAnchor, "BEGIN CERTIFICATE") {
		t.Errorf("bundle JSON %+v does not match the page", bundle)
	}
	if d := time.Until(bundle.ExpiresAt); d < 23*time.Hour || d > 25*time.Hour {
		t.Errorf("token expires in %v, want the 24 h default", d)
	}
	// The QR code is a PNG of exactly the bundle JSON, and the browser drew
	// it (a data: image the CSP allows).
	src, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.ID("bundle-qr"), "src"))
	must("QR src", err)
	b64, ok := strings.CutPrefix(src.Value, "data:image/png;base64,")
	if !ok {
		t.Fatalf("QR code src %.60q is not a PNG data: URI", src.Value)
	}
	qrPNG, err := base64.StdEncoding.DecodeString(b64)
	must("QR base64", err)
	img, err := png.Decode(bytes.NewReader(qrPNG))
	must("QR PNG", err)
	want, err := qrcode.Encode(bundleJSON, qrcode.Medium, -4)
	must("QR encode", err)
	if !bytes.Equal(qrPNG, want) {
		t.Errorf("the QR code does not encode the bundle JSON shown on the page")
	}
	width, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.getElementById("bundle-qr").naturalWidth`))
	must("QR width", err)
	if width != img.Bounds().Dx() || width < 100 {
		t.Errorf("the browser drew the QR code %d px wide, PNG is %d", width, img.Bounds().Dx())
	}
	// The registry holds the token's hash, bound to this device and ID.
	th := sha256.Sum256([]byte(token))
	e, err := env.st.Enrolment(context.Background(), th[:])
	if err != nil || e.DeviceID != "lamp-0002" || e.AssignedID != assigned || e.Mode != store.ModeUntrusted || e.State != store.EnrolmentIssued {
		t.Fatalf("enrolment in the registry: %+v %v", e, err)
	}
	screenshot("bundle")

	// 9. The device page now shows the token and the audit event; the
	// token itself is never shown again.
	must("back to device", chromedp.Do(ctx, chromedp.Click(chromedp.ID("bundle-device")), chromedp.WaitVisible(chromedp.ID("enrolments"))))
	wantText("#device-state", "token-issued")
	wantText("#assigned-id", assigned)
	wantText("#enrolments", "untrusted\town OBD\tissued")
	wantText("#audit", "device.token_issued")
	page, err := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("html")))
	must("page HTML", err)
	if strings.Contains(page, token) {
		t.Error("the device page shows the enrolment token again")
	}
	screenshot("device-token-issued")

	// 10. Log out: back at the login form, and the session is gone.
	if status := submit("#logout"); status != http.StatusOK || location() != env.base+"/login?m=bye" {
		t.Fatalf("logout: status %d at %s", status, location())
	}
	wantText("#notice", "You have logged out.")
	screenshot("logged-out")
	navigate(env.base + "/devices")
	if loc := location(); loc != env.base+"/login" {
		t.Fatalf("/devices after logout is %s, want the login page", loc)
	}
	wantText("h1", "Log in")
	screenshot("devices-after-logout")

	cookies, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{env.base + "/"}})
	must("cookies", err)
	for _, c := range cookies.Cookies {
		if c.Name == "cf_session" {
			t.Errorf("the session cookie survived logout: %+v", c)
		}
	}
	t.Logf("browser test took %v (%d screenshots in %s)", time.Since(start).Round(time.Millisecond), shot, artifacts)
	if err := ctx.Err(); errors.Is(err, context.DeadlineExceeded) {
		t.Fatal("the browser test ran out of time")
	}
}
