package portal_test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/credfactory/credfactory/ca/catest"
	"github.com/credfactory/credfactory/clientauth"
	"github.com/credfactory/credfactory/hsm"
	"github.com/credfactory/credfactory/hsm/softhsm"
	"github.com/credfactory/credfactory/portal"
	"github.com/credfactory/credfactory/server"
	"github.com/credfactory/credfactory/store"
)

// pageEnv is the whole portal as `credfactory serve` runs it, in-process: a
// real TLS listener on loopback, the JSON API and the pages registered
// through the same loop, a SQLite registry, and claim codes hashed by an HMAC
// key in a real SoftHSM token.
type pageEnv struct {
	base   string // https://127.0.0.1:<port>
	portal *portal.Portal
	st     *store.Store
	root   *x509.Certificate
	// serverSPKI is the base64 SHA-256 of the server certificate's
	// SubjectPublicKeyInfo, for Chromium's certificate pin.
	serverSPKI string
	mefURI     string
}

const pageClaimKeyURI = "pkcs11:object=portal-page-test-claim;type=secret-key"

func newPageEnv(t *testing.T) *pageEnv { t.Helper(); return newPageEnvWith(t, nil) }

// newPageEnvWith is newPageEnv with the portal's configuration adjusted by
// mod (rate limits, say) before the portal is made.
func newPageEnvWith(t *testing.T, mod func(*portal.Config)) *pageEnv {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()

	// The claim-code key, in SoftHSM. One hsm.Module per process: it is
	// closed when the test ends, so the next test can open its own.
	cfg, _, err := softhsm.Provision("", filepath.Join(dir, "hsm"), "portal-page-test")
	if err == nil {
		_, err = hsm.EnsureKeys(cfg, []hsm.KeySpec{{URI: pageClaimKeyURI, Type: hsm.KeyHMAC}})
	}
	var module *hsm.Module
	if err == nil {
		module, err = hsm.Open(cfg, nil)
	}
	if err != nil {
		t.Fatalf("SoftHSM: %v", err)
	}
	t.Cleanup(module.Close)
	claimKey, err := module.HMACKey(pageClaimKeyURI)
	if err != nil {
		t.Fatal(err)
	}

	// A software CA: root, issuing CA, the server's TLS certificate.
	testCA := catest.New(t)
	root, iss, issuing := testCA.Root, testCA.Issuing, testCA.CA
	sc := testCA.ServerCert(t)
	serverCert := &sc
	spki := sha256.Sum256(sc.Leaf.RawSubjectPublicKeyInfo)

	st, err := store.Open(ctx, "sqlite://"+filepath.Join(dir, "registry.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if _, err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}

	srv := server.New(server.Options{
		Listen: "127.0.0.1:0",
		TLS: server.TLSConfig(func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return serverCert, nil
		}),
		ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second, IdleTimeout: 30 * time.Second,
		MaxBodyBytes: 4 << 20, // the config default
	})
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	base := "https://" + srv.Addr().String()
	pcfg := portal.Config{MEFURI: base, TrustAnchor: root, SPDomain: "localhost"}
	if mod != nil {
		mod(&pcfg)
	}
	p := portal.New(pcfg, st, claimKey, issuing, issuing,
		clientauth.New([]*x509.Certificate{root}, []*x509.Certificate{iss}))
	// As cmd/credfactory's serve registers them.
	srv.Register(p.APIRoutes()...)
	srv.Register(p.PageRoutes()...)
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return &pageEnv{base: base, portal: p, st: st, root: root, mefURI: base,
		serverSPKI: base64.StdEncoding.EncodeToString(spki[:])}
}

// stakeholder makes an account and returns it.
func (e *pageEnv) stakeholder(t *testing.T, name, role, password string) store.Stakeholder {
	t.Helper()
	st, err := e.portal.CreateStakeholder(context.Background(), name, role, password, "")
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// pageClient is a plain HTTPS browser stand-in: it trusts the test root,
// keeps cookies, and does not follow redirects, so a test sees each 303.
type pageClient struct {
	t    *testing.T
	env  *pageEnv
	http *http.Client
}

func (e *pageEnv) client(t *testing.T) *pageClient {
	jar, _ := cookiejar.New(nil)
	roots := x509.NewCertPool()
	roots.AddCert(e.root)
	return &pageClient{t: t, env: e, http: &http.Client{
		Timeout:       20 * time.Second,
		Jar:           jar,
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

type pageResponse struct {
	status int
	header http.Header
	body   string
}

func (c *pageClient) do(req *http.Request) pageResponse {
	c.t.Helper()
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return pageResponse{resp.StatusCode, resp.Header, string(body)}
}

func (c *pageClient) get(path string) pageResponse {
	c.t.Helper()
	req, _ := http.NewRequest("GET", c.env.base+path, nil)
	return c.do(req)
}

// post sends a urlencoded form; header adds request headers (Origin, ...).
func (c *pageClient) post(path string, form url.Values, header ...string) pageResponse {
	c.t.Helper()
	req, _ := http.NewRequest("POST", c.env.base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return c.do(req)
}

// pageFormPart is one part of a multipart form, in order; a file has a name.
type pageFormPart struct{ field, fileName, content string }

func (c *pageClient) postMultipart(path string, parts ...pageFormPart) pageResponse {
	c.t.Helper()
	return postMultipartWith(c, path, nil, parts...)
}

// login logs in and returns the session's CSRF token from the next page.
func (c *pageClient) login(name, password string) string {
	c.t.Helper()
	r := c.post("/login", url.Values{"name": {name}, "password": {password}})
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/devices" {
		c.t.Fatalf("login %s: %d %s", name, r.status, r.body)
	}
	return c.csrf("/devices")
}

var pageCSRFField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf reads the CSRF token from a page's forms.
func (c *pageClient) csrf(path string) string {
	c.t.Helper()
	r := c.get(path)
	m := pageCSRFField.FindStringSubmatch(r.body)
	if r.status != http.StatusOK || m == nil {
		c.t.Fatalf("GET %s: %d, no CSRF token in %s", path, r.status, r.body)
	}
	return html.UnescapeString(m[1])
}
