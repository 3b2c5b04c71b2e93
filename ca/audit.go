package ca

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"

	"github.com/credfactory/credfactory/reqid"
)

// The audit trail of the issuer key: one record before and one after every
// signature of a certificate, CRL or OCSP response, as Boulder's CA logs
// before and after each signing, so a signature that was made and then
// discarded (the losing side of a retried redemption, a failed registry
// write) still leaves a trace naming what was signed. Records carry
// identifiers only: serial, profile, subject, issuer, request ID, outcome,
// the SHA-256 of what was signed; never key material, tokens or CSR
// attributes (the challengePassword is the enrolment token).

// audited runs sign between its two records. attrs names what is signed
// (built only when there is a trail); sign may add attributes known only
// after signing.
func (c *CA) audited(ctx context.Context, what string, attrs func() []slog.Attr, sign func() ([]slog.Attr, error)) error {
	if c.audit == nil {
		_, err := sign()
		return err
	}
	rec := append(attrs(), slog.String("issuer", c.issuer.Subject.CommonName), slog.String("request_id", reqid.From(ctx)))
	c.audit.LogAttrs(context.Background(), slog.LevelInfo, "signing "+what, rec...)
	more, err := sign()
	rec = append(rec, more...)
	outcome := "ok"
	if err != nil {
		outcome = "error"
		rec = append(rec, slog.String("error", err.Error()))
	}
	c.audit.LogAttrs(context.Background(), slog.LevelInfo, "signed "+what, append(rec, slog.String("outcome", outcome))...)
	return err
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// AuditedSigner wraps the signer of a ceremony key (the root, signing CA
// certificates and the root CRL at init) so that each of its signatures
// leaves the same two records as the issuer's: the ceremony's signatures
// are the most consequential the PKI makes. key names the key in the
// records; digest_sha256 is the SHA-256 of the digest signed (for
// Ed25519, of the message). l nil returns s unchanged.
func AuditedSigner(s crypto.Signer, l *slog.Logger, key string) crypto.Signer {
	if l == nil {
		return s
	}
	return auditedSigner{Signer: s, l: l, key: key}
}

type auditedSigner struct {
	crypto.Signer
	l   *slog.Logger
	key string
}

func (a auditedSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	rec := []slog.Attr{slog.String("key", a.key), slog.String("digest_sha256", sha256Hex(digest)), slog.String("ceremony", "init")}
	a.l.LogAttrs(context.Background(), slog.LevelInfo, "signing ceremony", rec...)
	sig, err := a.Signer.Sign(r, digest, opts)
	outcome := "ok"
	if err != nil {
		outcome = "error"
		rec = append(rec, slog.String("error", err.Error()))
	}
	a.l.LogAttrs(context.Background(), slog.LevelInfo, "signed ceremony", append(rec, slog.String("outcome", outcome))...)
	return sig, err
}
