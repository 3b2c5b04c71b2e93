package obs

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/credfactory/credfactory/ca"
	"github.com/credfactory/credfactory/client"
	"github.com/credfactory/credfactory/kdf"
	"github.com/credfactory/credfactory/mef"
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
	// Certificate is the device's certificate (PEM); Chain its issuers up
	// to, not including, the SP root (PEM); TrustAnchor the SP root (PEM).
	Certificate string     `json:"certificate,omitempty"`
	Chain       string     `json:"chain,omitempty"`
	TrustAnchor string     `json:"trustAnchor,omitempty"`
	Key         *ResultKey `json:"key,omitempty"`
}

// ResultKey is a provisioned shared key; Value is base64 in JSON.
type ResultKey struct {
	SUID      int       `json:"suid"`
	KeyID     string    `json:"keyId"`
	KeID      string    `json:"keId"`
	Value     []byte    `json:"value"`
	TargetIDs []string  `json:"targetIds"`
	NotAfter  time.Time `json:"notAfter"`
}

// outboxRecord is one file of spool/outbox/, named <job ID>.json: the
// forward item, durable before anything is sent.
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
		if k.SUID < int(kdf.SUIDRSPFMAF) || k.SUID > int(kdf.SUIDRSPFESDataSignature) {
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

// provision makes the job's credential: a certificate from the sub-CA in
// the HSM, or a fresh random key. A *localRefusal means the job is bad;
// any other error (HSM trouble) leaves the job for a later round.
func (o *OBS) provision(ctx context.Context, j Job) (client.ForwardItem, error) {
	b := j.Bundle
	item := client.ForwardItem{Token: b.Token, AssignedID: b.AssignedID}
	if j.CSR != "" {
		block, _ := pem.Decode([]byte(j.CSR))
		if block == nil || (block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST") {
			return item, refuse("bad_csr", "csr is not a PEM CERTIFICATE REQUEST")
		}
		issued, err := o.ca.Issue(ctx, ca.Request{CSR: block.Bytes, Profile: ca.ProfileDevice, AssignedID: b.AssignedID,
			URIs: []*url.URL{mef.AssignedIDURI(o.cfg.SPDomain, b.AssignedID)}, Validity: o.cfg.CertValidity})
		if err != nil {
			if code := ca.Code(err); code != "" {
				return item, refuse(code, "%s", err.Error())
			}
			return item, err
		}
		item.Certificate = string(ca.EncodeCertsPEM([]*x509.Certificate{issued.Certificate}))
		item.RequestID = requestID(b.Token, issued.DER)
		return item, nil
	}
	rel, err := kdf.NewRelativeID()
	if err != nil {
		return item, err
	}
	value := make([]byte, 32)
	if _, err := rand.Read(value); err != nil {
		return item, err
	}
	keyID, err := kdf.KpsaID(hex.EncodeToString(rel), o.fqdn)
	if err != nil {
		return item, err
	}
	item.Key = &client.ForwardKey{SUID: j.Key.SUID, KeyID: keyID, KeID: kdf.KeID(rel, o.fqdn), TargetIDs: j.Key.TargetIDs, Value: value,
		NotAfter: o.now().Add(o.cfg.KeyLifetime).UTC().Truncate(time.Second)}
	item.RequestID = requestID(b.Token, value)
	return item, nil
}

// result is the device's file, rebuilt from the outbox item alone so that
// recovery after a crash writes exactly what the SP will record.
func (o *OBS) result(it client.ForwardItem) (Result, error) {
	r := Result{AssignedID: it.AssignedID, RequestID: it.RequestID, TrustAnchor: o.anchorPEM}
	if it.Key != nil {
		k := it.Key
		r.CredentialID = kdf.CredentialID(kdf.CredentialType(k.SUID-10), k.KeyID)
		r.Key = &ResultKey{SUID: k.SUID, KeyID: k.KeyID, KeID: k.KeID, Value: k.Value, TargetIDs: k.TargetIDs, NotAfter: k.NotAfter}
		return r, nil
	}
	certs, err := ca.ParseCertsPEM([]byte(it.Certificate))
	if err != nil {
		return r, err
	}
	sum := sha256.Sum256(certs[0].Raw)
	r.CredentialID = kdf.CredentialID(mef.CertCredentialType(it.AssignedID), hex.EncodeToString(sum[:]))
	r.Certificate = it.Certificate
	r.Chain = o.chainPEM
	return r, nil
}
