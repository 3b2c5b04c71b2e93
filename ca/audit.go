package ca

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
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
