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
	var keyMode string
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
psk.json. In the default exporter mode (TS-0003 §10.3) the key never crosses
the wire: Ke comes from this TLS session's RFC 5705 export, the MEF answers
with identifiers, and the keys in psk.json (Km or Kpsa, or one Kuc per
--target) are derived here; --key-mode master has the MEF send the key
instead (credfactory's own mode). Files are written with mode 0600. A device that already has a
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
				return enrollKey(ctx, cmd, conn, b, out, suid, targets, keyMode)
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
	cmd.Flags().StringSliceVar(&targets, "target", nil, "with --psk: Target IDs allowed to fetch the key from the MAF (FQDNs for SUIDs 23-25: each gets its own key)")
	cmd.Flags().StringVar(&keyMode, "key-mode", client.KeyModeExporter, "with --psk: exporter (TS-0003 §10.3: derived here from the TLS session) or master (credfactory's own: the MEF sends the key)")
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

func enrollKey(ctx context.Context, cmd *cobra.Command, conn *client.Conn, b client.Bundle, out string, suid int, targets []string, mode string) error {
	if mode != client.KeyModeExporter && mode != client.KeyModeMaster {
		return fmt.Errorf("--key-mode %q: want exporter or master", mode)
	}
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
	// Each attempt's session export is kept before its request is sent: a
	// rerun after a lost answer goes over a new session, and only the kept
	// export of the session that redeemed the token gives the key.
	sessions := dirSessions(filepath.Join(out, "sessions"))
	var ans client.KeyAnswer
	err = retry(ctx, func() error {
		ans, err = conn.EnrolKeyWith(ctx, client.KeyRequest{Token: b.Token, AssignedID: b.AssignedID,
			RequestID: strings.TrimSpace(string(id)), SUID: suid, TargetIDs: targets, Mode: mode, Sessions: sessions})
		return err
	})
	if err != nil {
		return fmt.Errorf("enrol: %w", err)
	}
	raw, _ := json.MarshalIndent(ans, "", "  ")
	if err := writeFile(filepath.Join(out, "psk.json"), raw); err != nil {
		return err
	}
	// The exports of sessions that gave no key are of no use now; the one
	// that did stays, so a rerun answered with its KeID derives again.
	sessions.prune(ans.KeID)
	fmt.Fprintf(cmd.OutOrStdout(), "enrolled %s: shared key %s (SUID %d, %s mode) in %s\n", b.AssignedID, ans.KeyID, ans.SUID, ans.Mode, out)
	return nil
}

// dirSessions keeps each exporter-mode session's export in a file named by
// its RelativeKeID (client.SessionStore), mode 0600 in a 0700 directory.
type dirSessions string

func (d dirSessions) Save(export []byte) error {
	if err := os.MkdirAll(string(d), 0o700); err != nil {
		return err
	}
	return writeFile(filepath.Join(string(d), hex.EncodeToString(export[:16])), []byte(hex.EncodeToString(export)))
}

// prune removes every kept export but keID's.
func (d dirSessions) prune(keID string) {
	keep, _, _ := strings.Cut(keID, "@")
	entries, _ := os.ReadDir(string(d))
	for _, e := range entries {
		if e.Name() != keep {
			_ = os.Remove(filepath.Join(string(d), e.Name()))
		}
	}
}

func (d dirSessions) Find(relative string) ([]byte, bool) {
	if len(relative) != 32 || strings.Trim(relative, "0123456789abcdef") != "" {
		return nil, false
	}
	raw, err := os.ReadFile(filepath.Join(string(d), relative))
	if err != nil {
		return nil, false
	}
	export, err := hex.DecodeString(strings.TrimSpace(string(raw)))
	return export, err == nil
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
