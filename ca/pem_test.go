package ca

import (
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
)

func TestPEM(t *testing.T) {
	p := newTestPKI(t)
	bundle := EncodeCertsPEM([]*x509.Certificate{p.inter, nil, p.root})
	if n := strings.Count(string(bundle), "-----BEGIN CERTIFICATE-----"); n != 2 {
		t.Fatalf("bundle has %d certificates, want 2", n)
	}
	keyBlock := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("do-not-echo-me")})
	badCert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")})

	tests := []struct {
		name    string
		in      []byte
		want    []*x509.Certificate
		wantErr string
	}{
		{"round trip", bundle, []*x509.Certificate{p.inter, p.root}, ""},
		{"openssl text around blocks", append([]byte("subject=CN = x\nissuer=CN = y\n"), bundle...), []*x509.Certificate{p.inter, p.root}, ""},
		{"empty", nil, nil, "no PEM certificates"},
		{"no PEM", []byte("hello"), nil, "no PEM certificates"},
		{"private key in bundle", append(append([]byte(nil), bundle...), keyBlock...), nil, `"PRIVATE KEY"`},
		{"bad certificate", badCert, nil, "certificate 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCertsPEM(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "do-not-echo-me") {
					t.Error("error echoes block contents")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d certs, want %d", len(got), len(tt.want))
			}
			for i := range got {
				if !got[i].Equal(tt.want[i]) {
					t.Errorf("cert %d = %s", i, got[i].Subject)
				}
			}
		})
	}
}
