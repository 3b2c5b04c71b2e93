package ca

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"math/big"

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

func (c *CA) auditIssue(ctx context.Context, stage string, req *Request, serial *big.Int, tbs []byte, err error) {
	if c.audit == nil {
		return
	}
	attrs := []slog.Attr{
		slog.String("serial", serial.Text(16)),
		slog.String("profile", string(req.Profile)),
		slog.String("subject", req.AssignedID),
		slog.String("issuer", c.issuer.Subject.CommonName),
		slog.String("request_id", reqid.From(ctx)),
		slog.String("tbs_sha256", sha256Hex(tbs)),
	}
	c.auditLog(stage, "certificate", attrs, err)
}

func (c *CA) auditLog(stage, what string, attrs []slog.Attr, err error) {
	msg := "signing " + what
	if stage == "after" {
		msg = "signed " + what
		outcome := "ok"
		if err != nil {
			outcome = "error"
			attrs = append(attrs, slog.String("error", err.Error()))
		}
		attrs = append(attrs, slog.String("outcome", outcome))
	}
	c.audit.LogAttrs(context.Background(), slog.LevelInfo, msg, attrs...)
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
