package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/credfactory/credfactory/forwardapi"
	"github.com/smallstep/pkcs7"
)

// Bundle is what the portal hands an OBF (api/openapi.yaml Bundle).
type Bundle struct {
	Token             string    `json:"token"`
	AssignedID        string    `json:"assignedId"`
	ExpiresAt         time.Time `json:"expiresAt"`
	MEFURI            string    `json:"mefUri,omitempty"`
	TrustAnchor       string    `json:"trustAnchor,omitempty"`
	TrustAnchorSHA256 string    `json:"trustAnchorSha256,omitempty"`
}

// LoadBundle reads a bundle file.
func LoadBundle(path string) (Bundle, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return Bundle{}, fmt.Errorf("read bundle: %w", err)
	}
	var b Bundle
	if err := json.Unmarshal(raw, &b); err != nil {
		return Bundle{}, fmt.Errorf("bundle %s: %w", path, err)
	}
	if b.Token == "" || b.AssignedID == "" {
		return Bundle{}, fmt.Errorf("bundle %s: no token or assigned ID", path)
	}
	return b, nil
}

// Anchor parses the bundle's trust anchor and checks it against the
// fingerprint the bundle also carries (which an OBD may have shown or
// scanned separately).
func (b Bundle) Anchor() (*x509.Certificate, error) {
	block, _ := pem.Decode([]byte(b.TrustAnchor))
	if block == nil {
		return nil, errors.New("bundle: no trust anchor (a bundle for a trusted OBF has none: that OBF is the MEF)")
	}
	sum := sha256.Sum256(block.Bytes)
	if b.TrustAnchorSHA256 != "" && !strings.EqualFold(hex.EncodeToString(sum[:]), b.TrustAnchorSHA256) {
		return nil, errors.New("bundle: the trust anchor does not match its SHA-256 fingerprint")
	}
	return x509.ParseCertificate(block.Bytes)
}

// Error is a refusal from the server: its status, code and message.
type Error struct {
	Status  int
	Code    string
	Message string
	// RetryAfter is the server's Retry-After (whole seconds), 0 if absent.
	RetryAfter time.Duration
}

func (e *Error) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message) }

// Retryable: the server asked to try again (503, 429, EST's 202 Accepted:
// the request is pending, RFC 7030 §4.2.3, or 409 registry_contention: the
// request lost to concurrent changes and wrote nothing) or did not answer.
func Retryable(err error) bool {
	if errors.Is(err, ErrExporter) {
		return false
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Status == http.StatusServiceUnavailable || e.Status == http.StatusTooManyRequests || e.Status == http.StatusAccepted ||
			e.Status == http.StatusConflict && e.Code == "registry_contention"
	}
	return err != nil
}

// Conn talks to one credfactory over TLS, trusting only the given roots.
type Conn struct {
	Base string
	HTTP *http.Client

	// fresh is HTTP without keep-alives, for exporter-mode key requests:
	// one TLS session gives one enrolment key (key.go).
	freshOnce sync.Once
	fresh     *http.Client
	// sessions keeps the exports of this Conn's exporter-mode sessions,
	// for retries answered with an earlier session's KeID.
	sessions memSessions
}

// NewConn trusts roots only; cert, if set, is the TLS client certificate
// (a device's existing certificate, or a trusted OBF's).
func NewConn(base string, roots []*x509.Certificate, cert *tls.Certificate) *Conn {
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &Conn{Base: strings.TrimRight(base, "/"), HTTP: &http.Client{Timeout: 60 * time.Second,
		Transport: &http.Transport{TLSClientConfig: cfg, MaxIdleConnsPerHost: 64}}}
}

func (c *Conn) do(ctx context.Context, method, path, contentType string, body []byte, hdr map[string]string) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return c.send(c.HTTP, req)
}

func (c *Conn) send(hc *http.Client, req *http.Request) (*http.Response, []byte, error) {
	resp, err := hc.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	return resp, raw, err
}

func failure(resp *http.Response, raw []byte) error {
	e := &Error{Status: resp.StatusCode}
	if n, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && n > 0 {
		e.RetryAfter = time.Duration(n) * time.Second
	}
	var body struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if json.Unmarshal(raw, &body) == nil && body.Error.Code != "" {
		e.Code, e.Message = body.Error.Code, body.Error.Message
	} else { // EST answers text: "code: message"
		text := strings.TrimSpace(string(raw))
		e.Code, e.Message, _ = strings.Cut(text, ": ")
	}
	return e
}

// JSON sends v and decodes the answer into out (2xx) or returns an *Error.
func (c *Conn) JSON(ctx context.Context, method, path string, hdr map[string]string, v, out any) error {
	var body []byte
	if v != nil {
		var err error
		if body, err = json.Marshal(v); err != nil {
			return err
		}
	}
	resp, raw, err := c.do(ctx, method, path, "application/json", body, hdr)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return failure(resp, raw)
	}
	if out != nil {
		return json.Unmarshal(raw, out)
	}
	return nil
}

// ESTEnroll runs RFC 7030 simpleenroll (or simplereenroll): the CSR goes
// base64 as application/pkcs10, the answer is a base64 certs-only PKCS#7
// holding only the issued certificate (§4.2.3); ESTChain has its chain.
func (c *Conn) ESTEnroll(ctx context.Context, csr []byte, reenroll bool) ([]*x509.Certificate, error) {
	op := "simpleenroll"
	if reenroll {
		op = "simplereenroll"
	}
	resp, raw, err := c.do(ctx, "POST", "/.well-known/est/"+op, "application/pkcs10",
		[]byte(base64.StdEncoding.EncodeToString(csr)), map[string]string{"Content-Transfer-Encoding": "base64"})
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, failure(resp, raw)
	}
	return parseCertsOnly(raw)
}

// ESTCACerts fetches /cacerts.
func (c *Conn) ESTCACerts(ctx context.Context) ([]*x509.Certificate, error) {
	resp, raw, err := c.do(ctx, "GET", "/.well-known/est/cacerts", "", nil, nil)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, failure(resp, raw)
	}
	return parseCertsOnly(raw)
}

// ESTChain is the issuing chain from /cacerts (RFC 7030 §4.1.3), without
// the root, which the caller already trusts: what a device presents after
// its certificate.
func (c *Conn) ESTChain(ctx context.Context) ([]*x509.Certificate, error) {
	certs, err := c.ESTCACerts(ctx)
	if err != nil {
		return nil, err
	}
	var chain []*x509.Certificate
	for _, x := range certs {
		if bytes.Equal(x.RawIssuer, x.RawSubject) && x.CheckSignatureFrom(x) == nil {
			continue
		}
		chain = append(chain, x)
	}
	return chain, nil
}

func parseCertsOnly(b64 []byte) ([]*x509.Certificate, error) {
	der, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(string(b64)), ""))
	if err != nil {
		return nil, fmt.Errorf("EST answer is not base64: %w", err)
	}
	p7, err := pkcs7.Parse(der)
	if err != nil {
		return nil, fmt.Errorf("EST answer is not PKCS#7: %w", err)
	}
	if len(p7.Certificates) == 0 {
		return nil, errors.New("EST answer holds no certificate")
	}
	return p7.Certificates, nil
}

// ForwardItem, ForwardKey and ForwardResult are the forward route's wire
// contract (package forwardapi).
type (
	ForwardItem   = forwardapi.Item
	ForwardKey    = forwardapi.Key
	ForwardResult = forwardapi.Result
)

// Forward sends a batch; the connection must carry the OBF's client
// certificate.
func (c *Conn) Forward(ctx context.Context, items []ForwardItem) ([]ForwardResult, error) {
	var out forwardapi.Response
	err := c.JSON(ctx, "POST", forwardapi.Path, nil, forwardapi.Request{Items: items}, &out)
	return out.Results, err
}
