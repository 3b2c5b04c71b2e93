package castatus

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/credfactory/credfactory/ca"
	"github.com/credfactory/credfactory/server"
	"github.com/credfactory/credfactory/store"
	"golang.org/x/crypto/ocsp"
)

func withNonce(t *testing.T, leaf, issuer *x509.Certificate, nonce []byte) []byte {
	t.Helper()
	der, err := ca.NewOCSPRequest(leaf, issuer, crypto.SHA1, nonce)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// startServer runs the status routes on a real server.New with its plain
// status listener, and returns that listener's base URL.
func startServer(t *testing.T, f *fixture) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	srv := server.New(server.Options{Listen: "127.0.0.1:0", StatusListen: "127.0.0.1:0", MaxBodyBytes: 1 << 20,
		ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second,
		TLS: &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}})
	srv.RegisterStatus(f.svc.Routes()...)
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return "http://" + srv.StatusAddr().String()
}

// TestOCSPGETThroughServer: RFC 6960 A.1 GET through the real router,
// with a request whose base64 holds '/', '//' and '+', sent raw (the
// router must not fold "//"), path-escaped and query-escaped (as clients
// variously do).
func TestOCSPGETThroughServer(t *testing.T) {
	f := newFixture(t)
	leaf, _ := f.enrol(f.pki, "Sa", store.SourceRSPF)
	base := startServer(t, f)

	var der []byte
	var b64 string
	nonce := make([]byte, 16)
	for i := 0; ; i++ { // a nonce whose request encodes with all three (about 1 in 700)
		if _, err := rand.Read(nonce); err != nil {
			t.Fatal(err)
		}
		der = withNonce(t, leaf, f.pki.Issuing, nonce)
		b64 = base64.StdEncoding.EncodeToString(der)
		if strings.Contains(b64, "//") && strings.Contains(b64, "+") {
			break
		}
		if i > 1<<18 {
			t.Fatal("no nonce gives '//' and '+'")
		}
	}
	client := &http.Client{Timeout: 10 * time.Second}
	for _, tt := range []struct{ name, enc string }{
		{"raw", b64}, {"PathEscape", url.PathEscape(b64)}, {"QueryEscape", url.QueryEscape(b64)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := client.Get(base + ca.OCSPPath + "/" + tt.enc)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			r, err := ocsp.ParseResponseForCert(body, leaf, f.pki.Issuing)
			if resp.StatusCode != 200 || err != nil || r.Status != ocsp.Good {
				t.Fatalf("GET %s: %d %v", tt.enc, resp.StatusCode, err)
			}
		})
	}

	// HEAD on the CRL: GET's headers, no body.
	crlURL := base + ca.CRLPathPrefix + ca.IssuingCRLName + ca.CRLPathSuffix
	get, err := client.Get(crlURL)
	if err != nil {
		t.Fatal(err)
	}
	get.Body.Close()
	head, err := client.Head(crlURL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(head.Body)
	head.Body.Close()
	if head.StatusCode != 200 || len(body) != 0 || head.Header.Get("ETag") != get.Header.Get("ETag") ||
		head.Header.Get("Content-Type") != "application/pkix-crl" {
		t.Errorf("HEAD CRL: %d, %d body bytes, ETag %q (GET %q)", head.StatusCode, len(body), head.Header.Get("ETag"), get.Header.Get("ETag"))
	}

	// POST bodies over MaxOCSPRequestSize are refused by the route.
	resp, err := client.Post(base+ca.OCSPPath, "application/ocsp-request", bytes.NewReader(make([]byte, ca.MaxOCSPRequestSize+1)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized POST: %d, want 413", resp.StatusCode)
	}
}
