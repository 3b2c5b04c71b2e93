package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/credfactory/credfactory/ca"
	"github.com/credfactory/credfactory/client"
	"github.com/spf13/cobra"
)

func newEnroll() *cobra.Command {
	var bundlePath, out, keyPath, certPath, certKeyPath string
	var psk bool
	var suid int
	var targets []string
	cmd := &cobra.Command{
		Use:   "enroll",
		Short: "Play the Enrollee: enrol with a portal bundle over EST (or for a shared key)",
		Long: `enroll uses an enrolment bundle from the portal. It checks the MEF against the
bundle's trust anchor (and that anchor against its fingerprint), then either
generates a P-256 key (or uses --key), sends a CSR with the token as its
challengePassword to the MEF's EST simpleenroll, and writes key.pem, cert.pem
and chain.pem; or, with --psk, asks for a shared key of usage --suid and writes
psk.json. Files are written with mode 0600. A device that already has a
certificate presents it with --cert and --cert-key (required if the portal
bound the enrolment to it). An interrupted run is safe to repeat: it reuses
its key and request ID, and the MEF answers with the credential it recorded.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := client.LoadBundle(bundlePath)
			if err != nil {
				return err
			}
			anchor, err := b.Anchor()
			if err != nil {
				return err
			}
			if b.MEFURI == "" {
				return errors.New("the bundle names no MEF URI")
			}
			var devCert *tls.Certificate
			if certPath != "" {
				c, err := tls.LoadX509KeyPair(certPath, certKeyPath)
				if err != nil {
					return fmt.Errorf("device certificate: %w", err)
				}
				devCert = &c
			}
			if err := os.MkdirAll(out, 0o700); err != nil {
				return err
			}
			conn := client.NewConn(b.MEFURI, []*x509.Certificate{anchor}, devCert)
			ctx := cmd.Context()
			if psk {
				return enrollKey(ctx, cmd, conn, b, out, suid, targets)
			}
			return enrollCert(ctx, cmd, conn, b, out, keyPath)
		},
	}
	cmd.Flags().StringVar(&bundlePath, "bundle", "", "enrolment bundle (JSON from the portal)")
	cmd.Flags().StringVar(&out, "out", "", "directory for the key, certificate and chain (or psk.json)")
	cmd.Flags().StringVar(&keyPath, "key", "", "use this private key (PEM) instead of generating one")
	cmd.Flags().StringVar(&certPath, "cert", "", "the device's existing certificate (PEM), presented over TLS")
	cmd.Flags().StringVar(&certKeyPath, "cert-key", "", "the key of --cert (PEM)")
	cmd.Flags().BoolVar(&psk, "psk", false, "ask for a shared key instead of a certificate")
	cmd.Flags().IntVar(&suid, "suid", 22, "with --psk: the key's usage (21 MAF, 22 SAEF, 23-25 ESPrim/ESData)")
	cmd.Flags().StringSliceVar(&targets, "target", nil, "with --psk: Target IDs allowed to fetch the key from the MAF")
	_ = cmd.MarkFlagRequired("bundle")
	_ = cmd.MarkFlagRequired("out")
	return cmd
}

func enrollCert(ctx context.Context, cmd *cobra.Command, conn *client.Conn, b client.Bundle, out, keyPath string) error {
	key, err := deviceKey(out, keyPath)
	if err != nil {
		return err
	}
	csr, err := client.CSR(key, b.AssignedID, b.Token)
	if err != nil {
		return err
	}
	var certs []*x509.Certificate
	err = retry(ctx, func() error {
		certs, err = conn.ESTEnroll(ctx, csr, false)
		return err
	})
	if err != nil {
		return fmt.Errorf("enrol: %w", err)
	}
	if err := writeFile(filepath.Join(out, "cert.pem"), ca.EncodeCertsPEM(certs[:1])); err != nil {
		return err
	}
	// The answer holds only the certificate (RFC 7030 §4.2.3); the chain
	// is /cacerts', over the same TLS connection to the bundle's anchor.
	var chain []*x509.Certificate
	if err := retry(ctx, func() error {
		chain, err = conn.ESTChain(ctx)
		return err
	}); err != nil {
		return fmt.Errorf("enrol: the issued certificate's chain: %w", err)
	}
	if err := writeFile(filepath.Join(out, "chain.pem"), ca.EncodeCertsPEM(chain)); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "enrolled %s: certificate %s in %s\n", b.AssignedID, certs[0].SerialNumber.Text(16), out)
	return nil
}

func enrollKey(ctx context.Context, cmd *cobra.Command, conn *client.Conn, b client.Bundle, out string, suid int, targets []string) error {
	// The request ID is written before the request, so a rerun after a lost
	// answer asks again with it and gets the same key.
	idFile := filepath.Join(out, "request-id")
	id, err := os.ReadFile(idFile)
	if err != nil {
		raw := make([]byte, 16)
		rand.Read(raw)
		id = []byte(hex.EncodeToString(raw))
		if err := writeFile(idFile, id); err != nil {
			return err
		}
	}
	var ans client.KeyAnswer
	err = retry(ctx, func() error {
		ans, err = conn.EnrolKey(ctx, b.Token, b.AssignedID, strings.TrimSpace(string(id)), suid, targets)
		return err
	})
	if err != nil {
		return fmt.Errorf("enrol: %w", err)
	}
	raw, _ := json.MarshalIndent(ans, "", "  ")
	if err := writeFile(filepath.Join(out, "psk.json"), raw); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "enrolled %s: shared key %s (SUID %d) in %s\n", b.AssignedID, ans.KeyID, ans.SUID, out)
	return nil
}

// deviceKey loads --key, or the key a previous run generated in out, or
// generates a P-256 key and saves it before it is used.
func deviceKey(out, keyPath string) (crypto.Signer, error) {
	if keyPath == "" {
		keyPath = filepath.Join(out, "key.pem")
		if _, err := os.Stat(keyPath); errors.Is(err, os.ErrNotExist) {
			k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				return nil, err
			}
			der, err := x509.MarshalPKCS8PrivateKey(k)
			if err != nil {
				return nil, err
			}
			if err := writeFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})); err != nil {
				return nil, err
			}
			return k, nil
		}
	}
	raw, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		return nil, fmt.Errorf("key %s: not PEM", keyPath)
	}
	var k any
	switch block.Type {
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", keyPath, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("key %s: not a signing key", keyPath)
	}
	return s, nil
}

// retry repeats fn while the server asks to (503, 429) or does not answer,
// for up to a minute: the enrolment is idempotent, so a repeat is safe.
func retry(ctx context.Context, fn func() error) error {
	deadline := time.Now().Add(time.Minute)
	for wait := 200 * time.Millisecond; ; wait = min(wait*2, 5*time.Second) {
		err := fn()
		if err == nil || !client.Retryable(err) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
	}
}

func writeFile(path string, data []byte) error {
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return err
	}
	return os.Chmod(path, 0o600)
}
