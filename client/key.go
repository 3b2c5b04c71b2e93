package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"time"

	"github.com/credfactory/credfactory/kdf"
)

// Key modes of the MEF's shared-key route (docs/onem2m.md "Key
// hierarchy").
const (
	// KeyModeExporter: Ke from this device's TLS session with the MEF
	// (TS-0003 §10.3); the answer carries identifiers and this side derives
	// the keys.
	KeyModeExporter = "exporter"
	// KeyModeMaster: credfactory's own mode, the MEF derives the key from
	// its HSM master key and sends it.
	KeyModeMaster = "master"
)

// ErrExporter reports an exporter-mode key this side cannot derive: the
// session cannot export, or the MEF's KeID names no session this device
// kept. Repeating the request would not help (Retryable says no).
var ErrExporter = errors.New("client: exporter-mode key")

// TargetKey is a usage-constrained key (Kuc) as one Target receives it.
type TargetKey struct {
	TargetID string `json:"targetId"`
	Key      []byte `json:"key"`
}

// KeyAnswer is a provisioned shared key. In exporter mode the MEF sends
// only the identifiers; Key, TargetKeys and Ke are then derived here from
// this device's own TLS session, never received.
type KeyAnswer struct {
	CredentialID string `json:"credentialId"`
	Mode         string `json:"mode"`
	KeyID        string `json:"keyId"`
	KeID         string `json:"keId"`
	// Key is Km (SUID 21) or Kpsa (22).
	Key []byte `json:"key,omitempty"`
	// TargetKeys are the Kuc (SUID 23-25) of each Target: one key per
	// Target-FQDN.
	TargetKeys []TargetKey `json:"targetKeys,omitempty"`
	TargetIDs  []string    `json:"targetIds"`
	EnroleeID  string      `json:"enroleeId"`
	SUID       int         `json:"suid"`
	Lifetime   time.Time   `json:"lifetime"`
	Replayed   bool        `json:"replayed,omitempty"`
	// Ke is the exporter-mode enrolment key, kept by the device to derive
	// further keys (TS-0003 §10.3). Never sent by the MEF.
	Ke []byte `json:"ke,omitempty"`
}

// SessionStore keeps the 48-byte exports of a device's exporter-mode TLS
// sessions before their requests are sent. A retry after a lost answer goes
// over a new session, and the MEF answers it with the KeID of the session
// that redeemed the token: only the export kept from that session gives the
// key back.
type SessionStore interface {
	Save(export []byte) error
	// Find returns the export whose first 16 bytes are hex relative.
	Find(relative string) ([]byte, bool)
}

type memSessions struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (s *memSessions) Save(export []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string][]byte{}
	}
	s.m[hex.EncodeToString(export[:kdf.RelativeIDSize])] = bytes.Clone(export)
	return nil
}

func (s *memSessions) Find(relative string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[relative]
	return e, ok
}

// KeyRequest asks the MEF for a shared key.
type KeyRequest struct {
	Token, AssignedID string
	// RequestID makes a retry safe: the same ID gets the same credential.
	RequestID string
	SUID      int
	TargetIDs []string
	// Mode is KeyModeExporter (the default) or KeyModeMaster.
	Mode string
	// Sessions keeps exporter-mode exports across runs; nil keeps them in
	// the Conn, for the life of the process.
	Sessions SessionStore
}

// EnrolKey asks the MEF for a TS-0003 exporter-mode shared key over a new
// TLS connection and derives it here (EnrolKeyWith).
func (c *Conn) EnrolKey(ctx context.Context, token, assignedID, requestID string, suid int, targets []string) (KeyAnswer, error) {
	return c.EnrolKeyWith(ctx, KeyRequest{Token: token, AssignedID: assignedID, RequestID: requestID, SUID: suid, TargetIDs: targets})
}

// EnrolKeyWith asks the MEF for a shared key (JSON RSPF).
//
// Exporter mode: the request goes over a TLS connection of its own (one
// session gives one enrolment key), whose RFC 5705 export (label
// "EXPORTER-oneM2M-Bootstrap", 48 bytes, no context) is kept before the
// request is sent; the answer's KeID must name that session (or, on a
// replay, one kept earlier), else something between device and MEF
// terminated TLS and the keys would not match. Km, Kpsa or each Target's
// Kuc is then derived here from Ke (TS-0003 §10.3): Km with the MAF-ID the
// KmID names, Kpsa with this device's assigned ID.
func (c *Conn) EnrolKeyWith(ctx context.Context, req KeyRequest) (KeyAnswer, error) {
	mode := req.Mode
	if mode == "" {
		mode = KeyModeExporter
	}
	body := map[string]any{
		"token": req.Token, "assignedId": req.AssignedID, "requestId": req.RequestID,
		"key": map[string]any{"suid": req.SUID, "targetIds": req.TargetIDs, "mode": mode},
	}
	var out KeyAnswer
	if mode != KeyModeExporter {
		err := c.JSON(ctx, "POST", "/mef/v1/enrol", nil, body, &out)
		return out, err
	}
	sessions := req.Sessions
	if sessions == nil {
		sessions = &c.sessions
	}
	var export []byte
	var exportErr error
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		tc, ok := info.Conn.(*tls.Conn)
		if !ok {
			exportErr = fmt.Errorf("%w: exporter mode needs TLS to the MEF", ErrExporter)
			return
		}
		st := tc.ConnectionState()
		e, err := st.ExportKeyingMaterial(kdf.ExporterLabel, nil, kdf.ExporterSize)
		if err != nil {
			exportErr = fmt.Errorf("%w: this TLS session cannot export keying material: %w", ErrExporter, err)
			return
		}
		if err := sessions.Save(e); err != nil {
			exportErr = fmt.Errorf("keep the session's enrolment key: %w", err)
			return
		}
		export = e
	}}
	raw, err := json.Marshal(body)
	if err != nil {
		return out, err
	}
	hreq, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), "POST", c.Base+"/mef/v1/enrol", bytes.NewReader(raw))
	if err != nil {
		return out, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, raw, err := c.send(c.freshClient(), hreq)
	if err != nil {
		return out, err
	}
	if resp.StatusCode/100 != 2 {
		return out, failure(resp, raw)
	}
	if exportErr != nil {
		return out, exportErr
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return out, err
	}
	if out.Mode != KeyModeExporter {
		return out, fmt.Errorf("%w: asked for an exporter-mode key, the MEF answered mode %q", ErrExporter, out.Mode)
	}
	rel, _, ok := strings.Cut(out.KeID, "@")
	if !ok {
		return out, fmt.Errorf("the MEF answered KeID %q", out.KeID)
	}
	if export == nil || hex.EncodeToString(export[:kdf.RelativeIDSize]) != rel {
		kept, ok := sessions.Find(rel)
		if !ok {
			if out.Replayed {
				return out, fmt.Errorf("%w: the MEF recorded this key from an earlier TLS session (KeID %s) whose export was not kept: the key cannot be derived here", ErrExporter, out.KeID)
			}
			return out, fmt.Errorf("%w: the MEF's KeID %s does not name this TLS session: is something terminating TLS between device and MEF?", ErrExporter, out.KeID)
		}
		export = kept
	}
	if err := out.derive(export, req.AssignedID); err != nil {
		return out, err
	}
	return out, nil
}

// derive fills in the exporter-mode keys from the session's export.
func (a *KeyAnswer) derive(export []byte, assignedID string) error {
	_, ke, err := kdf.SplitExport(export)
	if err != nil {
		return err
	}
	a.Ke = bytes.Clone(ke)
	switch {
	case a.SUID == int(kdf.SUIDRSPFMAF):
		_, mafID, ok := strings.Cut(a.KeyID, "@")
		if !ok {
			return fmt.Errorf("the MEF answered KmID %q", a.KeyID)
		}
		a.Key = kdf.Km(ke, mafID)
	case a.SUID == int(kdf.SUIDRSPFSAEF):
		if a.EnroleeID != assignedID {
			return fmt.Errorf("the MEF recorded the key for %q, not this device's %q", a.EnroleeID, assignedID)
		}
		a.Key = kdf.Kpsa(ke, a.EnroleeID)
	default:
		for _, t := range a.TargetIDs {
			a.TargetKeys = append(a.TargetKeys, TargetKey{TargetID: t, Key: kdf.Kuc(ke, a.SUID, t)})
		}
	}
	return nil
}

// freshClient is c.HTTP without keep-alives (each request its own TLS
// connection), resuming TLS sessions to spare a full handshake: a resumed
// session still has its own export (RFC 8446 §7.5, RFC 5705 §4: both mix in
// the new handshake's randoms).
func (c *Conn) freshClient() *http.Client {
	c.freshOnce.Do(func() {
		var t *http.Transport
		if base, ok := c.HTTP.Transport.(*http.Transport); ok {
			t = base.Clone()
		} else {
			t = http.DefaultTransport.(*http.Transport).Clone()
		}
		t.DisableKeepAlives = true
		cfg := &tls.Config{}
		if t.TLSClientConfig != nil {
			cfg = t.TLSClientConfig.Clone()
		}
		if cfg.ClientSessionCache == nil {
			cfg.ClientSessionCache = tls.NewLRUClientSessionCache(64)
		}
		t.TLSClientConfig = cfg
		c.fresh = &http.Client{Timeout: c.HTTP.Timeout, Transport: t}
	})
	return c.fresh
}
