package mef

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"testing"

	"github.com/credfactory/credfactory/ca"
	"github.com/credfactory/credfactory/httpapi"
	"github.com/valyala/fasthttp"
)

// The request decoders meet bytes from anyone on the network: none may
// panic, and whatever they accept must be what they claim.

func seedCSR(f *testing.F) []byte {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		f.Fatal(err)
	}
	return der
}

func FuzzChallengePassword(f *testing.F) {
	csr := seedCSR(f)
	parsed, _ := x509.ParseCertificateRequest(csr)
	f.Add(parsed.RawTBSCertificateRequest)
	f.Add([]byte{0x30, 0x00})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, tbs []byte) {
		pw, err := challengePassword(tbs)
		if err == nil && pw == "" {
			t.Fatal("accepted an empty challengePassword")
		}
	})
}

func FuzzESTBody(f *testing.F) {
	csr := seedCSR(f)
	f.Add("application/pkcs10", []byte(base64.StdEncoding.EncodeToString(csr)))
	f.Add("application/pkcs10", []byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"))
	f.Add("application/pkcs10; charset=x", []byte("\r\n \t"))
	f.Add("text/plain", []byte("x"))
	f.Fuzz(func(t *testing.T, contentType string, body []byte) {
		var ctx fasthttp.RequestCtx
		ctx.Request.Header.SetContentType(contentType)
		ctx.Request.SetBody(body)
		der, err := estBody(&ctx)
		if err == nil && len(der) == 0 {
			t.Fatal("accepted an empty body")
		}
	})
}

func FuzzEnrolJSON(f *testing.F) {
	f.Add([]byte(`{"token":"t","assignedId":"S1","csr":"eA=="}`))
	f.Add([]byte(`{"token":"t","assignedId":"S1","requestId":"r","key":{"suid":22,"targetIds":["a"]}}`))
	f.Add([]byte(`{"token":"t","assignedId":"S1","csr":"-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n"}`))
	f.Add([]byte(`{"token":`))
	f.Add([]byte(`{} {}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var req enrolJSON
		if err := httpapi.Decode(body, &req); err != nil {
			return
		}
		if req.CSR != "" {
			if der, err := decodeDER(req.CSR, "CERTIFICATE REQUEST"); err == nil && len(der) == 0 {
				t.Fatalf("accepted %q as an empty CSR", req.CSR)
			}
		}
	})
}

func FuzzForwardBatch(f *testing.F) {
	f.Add([]byte(`{"items":[{"token":"t","assignedId":"S1","certificate":"eA=="}]}`))
	f.Add([]byte(`{"items":[{"token":"t","assignedId":"S1","key":{"suid":22,"keyId":"k","targetIds":["a"],"value":"AAAA","notAfter":"2030-01-01T00:00:00Z"}}]}`))
	f.Add([]byte(`{"items":[{"token":"t","assignedId":"S1","certificate":"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"}]}`))
	f.Add([]byte(`{"items":null}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var batch struct {
			Items []ForwardItem `json:"items"`
		}
		if err := httpapi.Decode(body, &batch); err != nil {
			return
		}
		for _, it := range batch.Items {
			if it.Certificate != "" {
				if der, err := decodeDER(it.Certificate, "CERTIFICATE"); err == nil && len(der) == 0 {
					t.Fatalf("accepted %q as an empty certificate", it.Certificate)
				}
			}
		}
	})
}

func FuzzCheckCSRNames(f *testing.F) {
	f.Add(seedCSR(f))
	f.Fuzz(func(t *testing.T, der []byte) {
		parsed, err := ca.ParseCSR(der)
		if err != nil {
			return
		}
		csr := parsed.Request()
		m := &MEF{cfg: Config{SPDomain: "sp.example"}}
		want, err := m.certShape("Sdevice")
		if err != nil {
			t.Fatal(err)
		}
		if checkCSRNames(parsed, want) == nil {
			for _, u := range csr.URIs {
				if u.String() != want.uri.String() && u.String() != want.legacy.String() {
					t.Fatalf("accepted URI %s", u)
				}
			}
			if len(csr.DNSNames)+len(csr.IPAddresses)+len(csr.EmailAddresses) > 0 {
				t.Fatal("accepted a DNS, IP or e-mail SAN")
			}
		}
	})
}
