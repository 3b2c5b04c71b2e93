package ca

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
)

// EncodeCertsPEM concatenates certificates as PEM CERTIFICATE blocks, in
// order: the format of trust-anchor.pem and of chain files.
func EncodeCertsPEM(certs []*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, c := range certs {
		if c == nil {
			continue
		}
		// pem.Encode only fails on invalid headers; we set none.
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return buf.Bytes()
}

// ParseCertsPEM parses every CERTIFICATE block in data, in order. Text
// between blocks (as `openssl x509 -text` leaves) is ignored; any other block
// type is an error rather than being skipped, so that a private key pasted
// into a bundle by mistake is noticed (its contents never reach the error).
func ParseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("ca: PEM block %d is %q, want CERTIFICATE", len(certs)+1, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("ca: PEM certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("ca: no PEM certificates found")
	}
	return certs, nil
}
