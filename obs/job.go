package obs

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"strings"
	"time"

	"github.com/credfactory/credfactory/client"
)

// Job is one file the line drops into spool/in/: the bundle the portal
// gave this OBS for a device, and either the device's CSR or a key request.
type Job struct {
	Bundle client.Bundle `json:"bundle"`
	// CSR (PEM) of the device's key: the OBS issues its certificate.
	CSR string `json:"csr,omitempty"`
	// Key asks the OBS for a shared key instead.
	Key *KeyJob `json:"key,omitempty"`
}

// KeyJob is a shared key request: its usage (SUID 21-25) and the Targets
// that may fetch it from the MAF.
type KeyJob struct {
	SUID      int      `json:"suid"`
	TargetIDs []string `json:"targetIds"`
}

// Result is spool/out/<assigned ID>.json: what the line loads into the
// device.
type Result struct {
	AssignedID   string `json:"assignedId"`
	CredentialID string `json:"credentialId"`
	RequestID    string `json:"requestId"`
	// Certificate is the device's certificate (PEM), issued by the SP's
	// CA; Chain its issuers up to, not including, the SP root (PEM);
	// TrustAnchor the SP root (PEM).
	Certificate string     `json:"certificate,omitempty"`
	Chain       string     `json:"chain,omitempty"`
	TrustAnchor string     `json:"trustAnchor,omitempty"`
	Key         *ResultKey `json:"key,omitempty"`
}

// ResultKey is a provisioned shared key; Value is base64 in JSON. The
// value is the OBS's, the identifiers and the lifetime the SP's.
type ResultKey struct {
	SUID      int       `json:"suid"`
	KeyID     string    `json:"keyId"`
	KeID      string    `json:"keId"`
	Value     []byte    `json:"value"`
	TargetIDs []string  `json:"targetIds"`
	NotAfter  time.Time `json:"notAfter"`
}

// outboxRecord is one file of spool/outbox/, named <job ID>.json: the
// forward item, durable before anything is sent and kept until the SP's
// answer is in out/.
type outboxRecord struct {
	JobID     string             `json:"jobId"`
	JobFile   string             `json:"jobFile"`
	CreatedAt time.Time          `json:"createdAt"`
	Item      client.ForwardItem `json:"item"`
}

// Refusal is one file of spool/refused/: an item the SP refused (source
// "sp", with the item) or a job the OBS could not provision (source "obs",
// with the job file's text). It carries a token, so it is 0600.
type Refusal struct {
	Source    string              `json:"source"`
	Code      string              `json:"code"`
	Message   string              `json:"message"`
	RefusedAt time.Time           `json:"refusedAt"`
	JobFile   string              `json:"jobFile,omitempty"`
	Item      *client.ForwardItem `json:"item,omitempty"`
	Job       string              `json:"job,omitempty"`
}

// localRefusal is a job the OBS will not provision, whatever it retries.
type localRefusal struct{ code, message string }

func (e *localRefusal) Error() string { return e.code + ": " + e.message }

func refuse(code, format string, args ...any) error {
	return &localRefusal{code: code, message: fmt.Sprintf(format, args...)}
}

// jobID names a job by its content, so a job that comes back after a crash
// finds the outbox record it already made.
func jobID(raw []byte) string {
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:])
}

// parseJob decodes a job strictly at the top level (the bundle is the
// portal's and may grow fields).
func parseJob(raw []byte, now time.Time) (Job, error) {
	var top struct {
		Bundle json.RawMessage `json:"bundle"`
		CSR    string          `json:"csr"`
		Key    *KeyJob         `json:"key"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&top); err != nil {
		return Job{}, refuse("bad_job", "the job is not the expected JSON: %v", err)
	}
	j := Job{CSR: top.CSR, Key: top.Key}
	if len(top.Bundle) == 0 || json.Unmarshal(top.Bundle, &j.Bundle) != nil {
		return Job{}, refuse("bad_job", "the job has no bundle object")
	}
	b := j.Bundle
	switch {
	case b.Token == "" || b.AssignedID == "":
		return Job{}, refuse("bad_job", "the bundle has no token or assignedId")
	case (j.CSR == "") == (j.Key == nil):
		return Job{}, refuse("bad_job", "a job has exactly one of csr and key")
	case !b.ExpiresAt.IsZero() && !now.Before(b.ExpiresAt):
		return Job{}, refuse("token_expired", "the bundle's token expired at %s", b.ExpiresAt.UTC().Format(time.RFC3339))
	}
	if k := j.Key; k != nil {
		if k.SUID < 21 || k.SUID > 25 { // TS-0003 §10.3.2: the RSPF-provisioned usages
			return Job{}, refuse("bad_key_request", "key.suid must be an RSPF-provisioned usage (21-25), got %d", k.SUID)
		}
		if len(k.TargetIDs) == 0 {
			return Job{}, refuse("bad_key_request", "key.targetIds names no Target")
		}
		for _, t := range k.TargetIDs {
			if t == "" || len(t) > 255 || strings.ContainsAny(t, " \t\r\n") {
				return Job{}, refuse("bad_key_request", "target IDs are non-empty IDs without spaces, at most 255 bytes")
			}
		}
	}
	return j, nil
}

// requestID is stable per credential: hex SHA-256 of token || credential,
// so a resend of the same item is a replay to the SP.
func requestID(token string, credential []byte) string {
	h := sha256.New()
	h.Write([]byte(token))
	h.Write(credential)
	return hex.EncodeToString(h.Sum(nil))
}

// provision makes the job's forward item: the device's CSR as it is (the
// SP's CA certifies it), or a fresh random key (the SP names it). A
// *localRefusal means the job is bad.
func (o *OBS) provision(j Job) (client.ForwardItem, error) {
	b := j.Bundle
	item := client.ForwardItem{Token: b.Token, AssignedID: b.AssignedID}
	if j.CSR != "" {
		block, _ := pem.Decode([]byte(j.CSR))
		if block == nil || (block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST") {
			return item, refuse("bad_csr", "csr is not a PEM CERTIFICATE REQUEST")
		}
		csr, err := x509.ParseCertificateRequest(block.Bytes)
		if err == nil {
			err = csr.CheckSignature()
		}
		if err != nil {
			return item, refuse("bad_csr", "the CSR does not parse or its signature does not verify: %v", err)
		}
		item.CSR = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: block.Bytes}))
		item.RequestID = requestID(b.Token, block.Bytes)
		return item, nil
	}
	value := make([]byte, 32)
	if _, err := rand.Read(value); err != nil {
		return item, err
	}
	item.Key = &client.ForwardKey{SUID: j.Key.SUID, TargetIDs: j.Key.TargetIDs, Value: value}
	if o.cfg.KeyLifetime > 0 {
		item.Key.NotAfter = o.now().Add(o.cfg.KeyLifetime).UTC().Truncate(time.Second)
	}
	item.RequestID = requestID(b.Token, value)
	return item, nil
}

// result is the device's file: the forwarded item with the SP's answer,
// which names the credential as the SP recorded it.
func (o *OBS) result(it client.ForwardItem, ans client.ForwardResult) (Result, error) {
	r := Result{AssignedID: it.AssignedID, RequestID: it.RequestID, CredentialID: ans.CredentialID, TrustAnchor: o.anchorPEM}
	if it.Key != nil {
		if ans.KeyID == "" || ans.KeID == "" {
			return r, fmt.Errorf("the SP's answer for %s names no key ID", it.AssignedID)
		}
		r.Key = &ResultKey{SUID: it.Key.SUID, KeyID: ans.KeyID, KeID: ans.KeID, Value: it.Key.Value, TargetIDs: it.Key.TargetIDs, NotAfter: ans.NotAfter}
		return r, nil
	}
	var leaf, chain []byte
	rest := []byte(ans.Certificate)
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		enc := pem.EncodeToMemory(block)
		if leaf == nil {
			leaf = enc
		} else {
			chain = append(chain, enc...)
		}
	}
	if leaf == nil {
		return r, fmt.Errorf("the SP's answer for %s carries no certificate", it.AssignedID)
	}
	r.Certificate, r.Chain = string(leaf), string(chain)
	return r, nil
}
